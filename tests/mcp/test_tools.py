"""The MCP tools over the SDK's in-memory client (hash embedder, temporary data directory)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp_types import LoggingMessageNotificationParams

import embeddix_mcp
from embeddix_core.embeddings import HashEmbedder
from embeddix_mcp import ServerSettings, build_server

EXPECTED_TOOLS = {
    "remember",
    "recall",
    "stream",
    "forget",
    "update",
    "feedback",
    "list_memories",
    "stats",
    "grant",
    "revoke",
    "create_collection",
    "list_collections",
    "drop_collection",
    "ingest",
    "search_collection",
    "get_document",
    "peek_collection",
    "delete_document",
}
FACTS = [
    ("The user's daughter is called Maya and she is seven", {"tags": ["family"], "importance": 0.9}),
    (
        "The user prefers green tea over coffee in the morning",
        {"tags": ["food", "preferences"], "importance": 0.4},
    ),
    ("The quarterly report is due on the first Friday of April", {"tags": ["work"], "source": "email"}),
    ("The user's car is a blue Volvo station wagon", {"tags": ["things"], "source": "chat"}),
    ("The user is allergic to peanuts and shellfish", {"tags": ["health"], "importance": 1.0, "user": "u1"}),
]


def test_public_names_are_curated() -> None:
    assert embeddix_mcp.__all__ == sorted(embeddix_mcp.__all__)
    for name in ("build_server", "build_http_app", "ServerSettings", "AppState"):
        assert name in embeddix_mcp.__all__


async def _seed(t: Any, **kw: Any) -> list[str]:
    out = await t.ok("remember", items=[{"text": text, "metadata": meta} for text, meta in FACTS], **kw)
    return list(out["ids"])


async def test_tools_have_schemas_and_annotations(make_server) -> None:
    async with Client(make_server()) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
    assert set(listed) == EXPECTED_TOOLS
    recall = listed["recall"]
    props = recall.input_schema["properties"]
    assert recall.output_schema is not None and "memories" in recall.output_schema["properties"]
    assert props["query"]["description"] and props["k"]["maximum"] == 100 and props["k"]["minimum"] == 1
    assert recall.input_schema["required"] == ["query"]
    assert "ctx" not in props
    assert recall.annotations is not None and recall.annotations.read_only_hint is True
    assert listed["forget"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert all(t.description for t in listed.values())


async def test_output_schemas_publish_nullable_fields_as_any_of_without_type_lists(
    make_server, tools
) -> None:
    # A type list ("type": ["string", "null"]) is legal JSON Schema, but single-type dialects (Gemini's
    # function declarations) reject it and the MCP Inspector's --strict check warns on each one.
    async with Client(make_server()) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        await tools(c).ok("remember", text="The cat sleeps on the red sofa")
        got = await tools(c).ok("recall", query="cat", k=1)  # the client validated it against the schema
    schema = listed["recall"].output_schema
    assert schema is not None and got["memories"] and got["memories"][0]["source"] is None
    memory = schema["$defs"]["Memory"]["properties"]
    assert memory["text"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert memory["score"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert schema["properties"]["ef"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert memory["score"]["description"] and memory["score"]["default"] is None

    def type_lists(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            own = [path] if isinstance(node.get("type"), list) else []
            return own + [p for k, v in node.items() for p in type_lists(v, f"{path}.{k}")]
        if isinstance(node, list):
            return [p for i, v in enumerate(node) for p in type_lists(v, f"{path}[{i}]")]
        return []

    for tool in listed.values():
        assert type_lists(tool.output_schema, "outputSchema") == [], tool.name
        assert type_lists(tool.input_schema, "inputSchema") == [], tool.name


async def test_remember_one_then_recall_identical_text_scores_one(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        out = await t.ok("remember", text="The cat sleeps on the red sofa", metadata={"tags": "pets"})
        assert len(out["ids"]) == 1 and out["updated"] == []
        await _seed(t)
        got = await t.ok("recall", query="The cat sleeps on the red sofa", k=3)
    best = got["memories"][0]
    assert best["id"] == out["ids"][0]
    assert best["score"] == pytest.approx(1.0, abs=1e-6)
    assert best["tags"] == ["pets"] and best["agent"] == "alice" and best["created_at"]
    scores = [m["score"] for m in got["memories"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert all(-1.0 <= s <= 1.0 for s in scores)


async def test_remember_many_is_one_batch_with_ids_in_order(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        ids = await _seed(t)
        assert len(set(ids)) == len(FACTS)
        for i, (text, _) in enumerate(FACTS):
            got = await t.ok("recall", query=text, k=1)
            assert got["memories"][0]["id"] == ids[i]
        page = await t.ok("list_memories", limit=10)
    assert [m["id"] for m in page["memories"]] == ids
    first = page["memories"][0]
    assert first["tags"] == ["family"] and first["importance"] == 0.9


async def test_filters_on_metadata(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        important = await t.ok("recall", query="user", k=10, filter={"importance": {"$gte": 0.8}})
        assert {m["text"] for m in important["memories"]} == {FACTS[0][0], FACTS[4][0]}
        tagged = await t.ok("recall", query="anything", k=10, filter={"tags": {"$contains": "work"}})
        assert [m["text"] for m in tagged["memories"]] == [FACTS[2][0]]
        sources = await t.ok("recall", query="anything", k=10, filter={"source": {"$in": ["chat", "email"]}})
        assert len(sources["memories"]) == 2
        by_user = await t.ok("recall", query="food", k=10, user="u1")
        assert [m["text"] for m in by_user["memories"]] == [FACTS[4][0]]
        assert by_user["memories"][0]["user"] == "u1"


async def test_hybrid_search_fuses_text_and_keeps_similarity_scores(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        got = await t.ok("recall", query="peanuts", k=3, text_weight=0.7)
    assert got["hybrid"] is True
    best = got["memories"][0]
    assert best["text"] == FACTS[4][0]
    assert best["fused_score"] is not None and 0 < best["fused_score"] < 1
    assert -1.0 <= best["score"] <= 1.0


async def test_recall_target_and_deadline_are_accepted(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        got = await t.ok("recall", query=FACTS[1][0], k=2, recall_target=0.99, deadline_ms=30_000)
    assert got["memories"][0]["text"] == FACTS[1][0]
    assert got["ef"] is None and got["deadline_met"] is True  # a small collection is searched exactly


async def test_dedupe_updates_the_near_duplicate(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        first = await t.ok("remember", text="The user lives in Lisbon", metadata={"tags": ["home"]})
        again = await t.ok(
            "remember", text="The user lives in Lisbon.", metadata={"tags": ["city"]}, dedupe_threshold=0.95
        )
        assert again["ids"] == first["ids"] and again["updated"] == first["ids"]
        other = await t.ok("remember", text="The user works as a nurse", dedupe_threshold=0.95)
        assert other["ids"] != first["ids"] and other["updated"] == []
        batch = await t.ok(
            "remember", items=[{"text": "Likes jazz"}, {"text": "Likes jazz!"}], dedupe_threshold=0.95
        )
        assert batch["ids"][0] == batch["ids"][1]
        page = await t.ok("list_memories")
        stats = await t.ok("stats")
    assert page["total"] == 3
    lisbon = next(m for m in page["memories"] if m["id"] == first["ids"][0])
    assert lisbon["text"] == "The user lives in Lisbon." and lisbon["tags"] == ["home", "city"]
    assert lisbon["updated_at"] and lisbon["created_at"]
    assert stats["session"]["deduplicated"] == 2


async def test_stream_sends_partial_results_as_progress_and_logs(make_server, tools) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with Client(make_server(), logging_callback=on_log, log_level="info") as c:
        t = tools(c)
        await _seed(t)
        res = await c.call_tool("stream", {"query": FACTS[3][0], "k": 3}, progress_callback=on_progress)
        full = await t.ok("recall", query=FACTS[3][0], k=3)
    assert not res.is_error and res.structured_content is not None
    final = res.structured_content
    n = len(final["passes"])
    assert n >= 1 and [p[0] for p in progress] == list(range(1, n + 1)) and progress[-1][1] == n
    partial = json.loads(progress[0][2] or "")
    assert partial["pass"] == 1 and partial["memories"][0]["text"] == FACTS[3][0]
    assert json.loads(progress[-1][2] or "")["final"] is True
    assert [m["id"] for m in final["memories"]] == [m["id"] for m in full["memories"]]
    assert len(logs) == n and logs[-1]["memories"][0]["id"] == final["memories"][0]["id"]


async def test_stream_widens_over_an_hnsw_collection(make_server, tools, monkeypatch) -> None:
    # from the first record on, memory collections use HNSW, so the stream makes several passes
    monkeypatch.setenv("EMBEDDIX_INDEX_THRESHOLD", "0")
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        res = await c.call_tool("stream", {"query": FACTS[3][0], "k": 2}, progress_callback=on_progress)
    final = res.structured_content
    assert (
        final is not None
        and len(final["passes"]) >= 2
        and progress == list(range(1, len(final["passes"]) + 1))
    )
    efs = [p["ef"] for p in final["passes"]]
    assert efs == sorted(efs) and final["memories"][0]["text"] == FACTS[3][0]


async def test_cancelling_a_stream_stops_it(make_server, tools, monkeypatch) -> None:
    monkeypatch.setenv("EMBEDDIX_INDEX_THRESHOLD", "0")  # HNSW: a stream of several passes
    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        passes: list[float] = []
        with anyio.CancelScope() as scope:

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                passes.append(p)
                scope.cancel()

            await c.call_tool("stream", {"query": "tea", "k": 2}, progress_callback=on_progress)
        assert scope.cancelled_caught
        stats = await t.ok("stats")
        assert passes == [1]
        assert stats["session"]["streams_cancelled"] == 1 and stats["session"]["streams"] == 0
        assert (await t.ok("recall", query="tea", k=1))["memories"]  # still serving


async def test_forget_by_ids_and_by_filter(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        ids = await _seed(t)
        assert (await t.ok("forget", ids=[ids[0], "not-there"]))["deleted"] == 1
        assert (await t.ok("forget", filter={"tags": {"$contains": "work"}}))["deleted"] == 1
        assert "exactly one" in await t.err("forget", ids=[ids[1]], filter={"tags": "x"})
        assert "exactly one" in await t.err("forget")
        assert "non-empty" in await t.err("forget", filter={})
        left = await t.ok("list_memories")
    assert left["total"] == 3 and ids[0] not in {m["id"] for m in left["memories"]}


async def test_update_text_reembeds_and_metadata_merges(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        ids = await _seed(t)
        out = await t.ok(
            "update",
            id=ids[3],
            text="The user's car is a red Tesla",
            metadata={"source": None, "tags": ["car"], "color": "red"},
        )
        assert out["reembedded"] is True
        m = out["memory"]
        assert m["text"] == "The user's car is a red Tesla" and m["source"] is None
        assert m["tags"] == ["car"] and m["metadata"] == {"color": "red"} and m["updated_at"]
        got = await t.ok("recall", query="The user's car is a red Tesla", k=1)
        assert got["memories"][0]["id"] == ids[3] and got["memories"][0]["score"] == pytest.approx(
            1.0, abs=1e-6
        )
        only_meta = await t.ok("update", id=ids[3], metadata={"color": "blue"})
        assert only_meta["reembedded"] is False and only_meta["memory"]["metadata"] == {"color": "blue"}
        assert "no memory with id" in await t.err("update", id="missing", text="x")
        assert "kept by the server" in await t.err("update", id=ids[3], metadata={"created_at": "x"})
        assert "needs text, metadata" in await t.err("update", id=ids[3])


async def test_feedback_counts_are_stored_on_the_memory(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        ids = await _seed(t)
        await t.ok("recall", query="what does the user drink", k=1)
        await t.ok("feedback", id=ids[1], relevant=True)
        await t.ok("feedback", id=ids[1], relevant=True, query="tea or coffee")
        out = await t.ok("feedback", id=ids[1], relevant=False)
        assert out["feedback"] == {"relevant": 2, "irrelevant": 1}
        got = await t.ok("recall", query=FACTS[1][0], k=1)
        assert got["memories"][0]["feedback"] == {"relevant": 2, "irrelevant": 1}
        assert "no memory with id" in await t.err("feedback", id="nope", relevant=True)
        assert (await t.ok("stats"))["session"]["feedback"] == 3


async def test_list_memories_pages_with_a_cursor(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        ids = (
            await t.ok(
                "remember", items=[{"text": f"memory number {i}", "metadata": {"n": i}} for i in range(25)]
            )
        )["ids"]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await t.ok("list_memories", limit=10, **({"cursor": cursor} if cursor else {}))
            assert page["total"] == 25
            seen += [m["id"] for m in page["memories"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and seen == ids
        odd = await t.ok("list_memories", limit=200, filter={"n": {"$in": [1, 3, 5]}})
        assert odd["total"] == 3 and odd["next_cursor"] is None
        assert "cursor" in await t.err("list_memories", cursor="garbage!")
        other_ns = await t.ok("list_memories", namespace="work")
        assert other_ns["total"] == 0
        first = await t.ok("list_memories", limit=1)
        assert "cursor" in await t.err("list_memories", cursor=first["next_cursor"], namespace="work")


async def test_stats_reports_namespaces_and_session(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        await t.ok("remember", text="Standup at 9:30", namespace="work")
        await t.ok("create_collection", name="manuals")
        await t.ok("recall", query="standup", namespace="work")
        s = await t.ok("stats")
    assert s["agent"] == "alice" and s["total_memories"] == len(FACTS) + 1
    assert {(n["namespace"], n["count"]) for n in s["namespaces"]} == {(None, len(FACTS)), ("work", 1)}
    assert s["collections"] == ["manuals"] and s["embedder"] == "hash-384-v1" and s["dim"] == 384
    assert s["session"]["remembered"] == len(FACTS) + 1 and s["session"]["recalls"] == 1


async def test_namespaces_are_separate(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await t.ok("remember", text="Deploy on Tuesdays", namespace="work")
        assert (await t.ok("recall", query="Deploy on Tuesdays"))["memories"] == []
        got = await t.ok("recall", query="Deploy on Tuesdays", namespace="work")
        assert got["memories"][0]["namespace"] == "work"
        assert "pattern" in await t.err("recall", query="x", namespace="alice:secret")


async def test_document_collections_ingest_and_search(make_server, tools) -> None:
    sections = [
        "Installation. Run the installer and accept the licence. The installer needs 2 GB of disk space.",
        "Configuration. Edit settings.toml to choose the language and the colour theme of the interface.",
        "Troubleshooting. If the application does not start, delete the cache folder and start it again.",
    ]
    manual = "\n\n".join(s * 3 for s in sections)
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    async with Client(make_server()) as c:
        t = tools(c)
        assert (await t.ok("create_collection", name="manuals"))["count"] == 0
        res = await c.call_tool(
            "ingest",
            {
                "collection": "manuals",
                "chunk_size": 300,
                "overlap": 50,
                "documents": [
                    {"text": manual, "id": "guide", "metadata": {"product": "app"}},
                    {"text": "A short note about licences.", "metadata": {"product": "legal"}},
                ],
            },
            progress_callback=on_progress,
        )
        assert not res.is_error, res.content
        out = res.structured_content
        assert out is not None and out["documents"][0] == "guide" and out["chunks"] > 3
        assert progress and progress[-1] == out["chunks"]
        hits = (await t.ok("search_collection", collection="manuals", query=sections[2], k=2))["hits"]
        assert hits[0]["doc_id"] == "guide" and "Troubleshooting" in hits[0]["text"]
        assert hits[0]["metadata"] == {"product": "app"} and hits[0]["score"] > 0.5
        legal = await t.ok(
            "search_collection", collection="manuals", query="licences", filter={"product": "legal"}
        )
        assert [h["doc_id"] for h in legal["hits"]] == [out["documents"][1]]
        again = await t.ok(
            "ingest", collection="manuals", documents=[{"text": "Replaced guide.", "id": "guide"}]
        )
        assert again["replaced_chunks"] == out["chunks"] - 1 and again["chunks"] == 1
        listed = await t.ok("list_collections")
        assert listed["collections"] == [{"name": "manuals", "count": 2}]
        assert "overlap" in await t.err(
            "ingest", collection="manuals", documents=[{"text": "x"}], chunk_size=100, overlap=100
        )
        assert "no document collection" in await t.err("search_collection", collection="nothing", query="x")
        assert (await t.ok("drop_collection", name="manuals"))["dropped"] is True
        assert (await t.ok("drop_collection", name="manuals"))["dropped"] is False
        assert (await t.ok("list_collections"))["collections"] == []


async def test_bad_arguments_are_readable_errors_and_the_server_keeps_working(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await _seed(t)
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("recall", {"query": "x", "k": 0}, "greater than or equal to 1"),
            ("recall", {"query": "x", "k": 1000}, "less than or equal to 100"),
            ("recall", {"query": ""}, "at least 1 character"),
            ("recall", {}, "query"),
            ("recall", {"query": "x", "text_weight": 2}, "less than or equal to 1"),
            ("recall", {"query": "x", "filter": {"$bogus": 1}}, "$bogus"),
            ("recall", {"query": "x", "filter": {"n": {"$gte": [1]}}}, "$gte"),
            ("recall", {"query": "x", "from_agent": "bob"}, "has not granted"),
            ("remember", {}, "either text"),
            ("remember", {"text": "a", "items": [{"text": "b"}]}, "either text"),
            ("remember", {"text": "a", "metadata": {"importance": 5}}, "importance"),
            ("remember", {"text": "a", "metadata": {"created_ts": 1}}, "kept by the server"),
            ("remember", {"text": "a", "metadata": {"time": "yesterday"}}, "ISO-8601"),
            ("remember", {"text": "a", "metadata": {"nested": {"a": 1}}}, "nested"),
            ("remember", {"items": [{"txt": "a"}]}, "text"),
            ("remember", {"text": "a", "dedupe_threshold": 0.1}, "greater than or equal to 0.5"),
            ("no_such_tool", {}, "Unknown tool"),
            ("grant", {"to_agent": "alice"}, "another agent"),
            ("grant", {"to_agent": "bad:name"}, "pattern"),
        ]
        for name, args, expected in cases:
            message = await t.err(name, **args)
            assert expected in message, (name, args, message)
        got = await t.ok("recall", query=FACTS[0][0], k=1)
        assert got["memories"][0]["score"] == pytest.approx(1.0, abs=1e-6)


async def test_two_agents_are_isolated(make_server, tools) -> None:
    alice, bob = make_server("alice"), make_server("bob")
    async with Client(alice) as ca, Client(bob) as cb:
        a, b = tools(ca), tools(cb)
        await _seed(a)
        await a.ok("remember", text="alice's work secret", namespace="work")
        assert (await b.ok("recall", query=FACTS[0][0], k=5))["memories"] == []
        assert (await b.ok("list_memories"))["total"] == 0
        assert (await b.ok("stats"))["total_memories"] == 0
        assert "has not granted" in await b.err("recall", query="x", from_agent="alice")
        assert "has not granted" in await b.err("list_memories", from_agent="alice")
        assert "has not granted" in await b.err("stream", query="x", from_agent="alice", namespace="work")
        # Bob cannot reach Alice's collections through a namespace: ':' is not allowed in one.
        for ns in ("agent:alice", ":work", "alice:work", ".."):
            assert "pattern" in await b.err("recall", query="x", namespace=ns)
        assert (await b.ok("recall", query=FACTS[0][0], namespace="alice"))["memories"] == []
        ids = (await a.ok("list_memories"))["memories"]
        assert (await b.ok("forget", ids=[ids[0]["id"]]))["deleted"] == 0
        assert "no memory with id" in await b.err("update", id=ids[0]["id"], text="hacked")
        assert (await a.ok("list_memories"))["total"] == len(FACTS)


async def test_grants_are_read_only_durable_and_revocable(make_server, tools) -> None:
    async with Client(make_server("alice")) as ca, Client(make_server("bob")) as cb:
        a, b = tools(ca), tools(cb)
        ids = await _seed(a)
        await a.ok("remember", text="alice's work notes", namespace="work")
        out = await a.ok("grant", to_agent="bob")
        assert out["changed"] is True and out["grant"]["grantee"] == "bob"
        assert (await a.ok("grant", to_agent="bob"))["changed"] is False
        got = await b.ok("recall", query=FACTS[0][0], k=1, from_agent="alice")
        assert (
            got["memories"][0]["id"] == ids[0]
            and got["memories"][0]["agent"] == "alice"
            and got["agent"] == "alice"
        )
        assert (await b.ok("list_memories", from_agent="alice"))["total"] == len(FACTS)
        assert "has not granted" in await b.err("recall", query="x", from_agent="alice", namespace="work")
        # Read-only: bob's writes go to bob's own namespace, never alice's.
        assert (await b.ok("forget", ids=ids))["deleted"] == 0
        assert "no memory with id" in await b.err("feedback", id=ids[0], relevant=False)
        stats = await a.ok("stats")
        assert [g["grantee"] for g in stats["grants_given"]] == ["bob"]
        assert [g["owner"] for g in (await b.ok("stats"))["grants_received"]] == ["alice"]
    # A new server process (here: a new lifespan) on the same data directory honours the stored grant.
    async with Client(make_server("bob")) as cb:
        b = tools(cb)
        assert (await b.ok("recall", query=FACTS[0][0], k=1, from_agent="alice"))["memories"][0]["id"] == ids[
            0
        ]
    async with Client(make_server("alice")) as ca:
        assert (await tools(ca).ok("revoke", to_agent="bob"))["changed"] is True
    async with Client(make_server("bob")) as cb:
        assert "has not granted" in await tools(cb).err("recall", query="x", from_agent="alice")


async def test_resources_and_prompt(make_server, tools) -> None:
    async with Client(make_server("alice")) as ca, Client(make_server("bob")) as cb:
        a = tools(ca)
        ids = await _seed(a)
        res = await ca.read_resource(f"memory://alice/{ids[0]}")
        mem = json.loads(res.contents[0].text)  # type: ignore[union-attr]
        assert mem["id"] == ids[0] and mem["text"] == FACTS[0][0] and mem["agent"] == "alice"
        stats = json.loads((await ca.read_resource("stats://alice")).contents[0].text)  # type: ignore[union-attr]
        assert stats["total_memories"] == len(FACTS)
        with pytest.raises(Exception, match="has not granted"):
            await cb.read_resource(f"memory://alice/{ids[0]}")
        with pytest.raises(Exception, match="has not granted"):
            await cb.read_resource("stats://alice")
        await a.ok("grant", to_agent="bob")
        shared = json.loads((await cb.read_resource(f"memory://alice/{ids[0]}")).contents[0].text)  # type: ignore[union-attr]
        assert shared["id"] == ids[0]
        with pytest.raises(Exception, match="no memory"):
            await ca.read_resource("memory://alice/unknown")
        templates = {t.uri_template for t in (await ca.list_resource_templates()).resource_templates}
        assert {"memory://{agent}/{id}{?namespace}", "stats://{agent}"} <= templates
        prompt = await ca.get_prompt("recall_context", {"query": FACTS[1][0], "k": "2"})
        text = prompt.messages[0].content.text  # type: ignore[union-attr]
        assert FACTS[1][0] in text and text.count("\n1. ") == 1 and "\n3. " not in text


async def test_a_different_embedding_model_is_refused_not_mixed(make_server, tools, data_dir) -> None:
    async with Client(make_server()) as c:
        await _seed(tools(c))
    other = build_server(
        ServerSettings(data=str(data_dir), agent="alice"), embedder=HashEmbedder(dim=384, seed=7)
    )
    async with Client(other) as c:
        message = await tools(c).err("recall", query="anything")
    assert "embedding model" in message and "hash-384-v1" in message
