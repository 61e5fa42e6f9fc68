"""The memory domain called directly, without MCP: what any front end gets (hash embedder, temp directory)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from embeddix_core import InvalidArgumentError, NotFoundError
from embeddix_mcp import AccessDeniedError, AppState, ServerSettings, memory
from embeddix_mcp import documents as rag
from embeddix_mcp.models import DocumentIn, MemoryIn
from embeddix_mcp.search import SearchOptions, search
from embeddix_mcp.state import open_state


@pytest.fixture
def state(tmp_path: Path) -> Iterator[AppState]:
    st = open_state(ServerSettings(data=str(tmp_path / "data"), agent="alice", embedder="hash"))
    try:
        yield st
    finally:
        st.close()


def _items(*texts: str) -> list[MemoryIn]:
    return [MemoryIn(text=t) for t in texts]


def test_knobs_reach_the_core_planner(state: AppState) -> None:
    memory.remember(state, "alice", None, _items(*(f"note number {i} about topic {i}" for i in range(50))))
    col = state.memories("alice", None, create=False)
    assert col is not None
    vec = state.embedder.embed_query("note number 3 about topic 3")
    hits = search(col, vec, 5, "x", None, SearchOptions(recall_target=0.99, deadline_ms=50), "alice")
    assert hits[0].document == "note number 3 about topic 3"
    assert hits.plan is not None and hits.plan.recall_target == 0.99
    assert not SearchOptions().hybrid and SearchOptions(text_weight=0.3).hybrid
    fused = search(col, vec, 5, "topic 3", None, SearchOptions(text_weight=0.3), "alice")
    assert fused.plan is not None and fused.plan.ranking == "rrf" and fused[0].rank_score is not None


def test_remember_merges_near_duplicates_in_the_batch_and_in_the_store(state: AppState) -> None:
    first = memory.remember(state, "alice", None, [MemoryIn(text="tea at nine", metadata={"tags": ["a"]})])
    res = memory.remember(
        state,
        "alice",
        None,
        [
            MemoryIn(text="tea at nine", metadata={"tags": ["b"]}),  # the stored one
            MemoryIn(text="coffee at ten"),
            MemoryIn(text="coffee at ten", metadata={"tags": ["c"]}),  # its twin earlier in this batch
        ],
        threshold=0.97,
    )
    assert res.ids[0] == first.ids[0] and res.updated == [first.ids[0]]
    assert res.ids[1] == res.ids[2] and res.ids[1] not in res.updated
    assert memory.list_memories(state, "alice", "alice", None).total == 2
    stored = memory.read_memory(state, "alice", "alice", first.ids[0], None)
    assert stored is not None and stored.tags == ["a", "b"]
    assert state.session("alice").deduplicated == 2


def test_recall_stream_passes_and_bookkeeping(state: AppState) -> None:
    memory.remember(state, "alice", None, _items("the cat sleeps", "the dog barks", "rain tomorrow"))
    run = memory.RecallStream(state, "alice", "alice", None, "cat", 2)
    steps = []
    while (step := run.next_pass()) is not None:
        steps.append(step)
    res = run.finish()
    assert steps[-1].final and res.memories == steps[-1].memories and len(res.passes) == len(steps)
    assert res.memories[0].text == "the cat sleeps"
    hybrid = memory.RecallStream(state, "alice", "alice", None, "cat", 2, opts=SearchOptions(text_weight=0.5))
    assert hybrid.next_pass() is not None and hybrid.next_pass() is None and hybrid.finish().hybrid
    memory.RecallStream(state, "alice", "alice", None, "cat", 2).cancel()
    s = state.session("alice")
    assert (s.streams, s.streams_cancelled, s.last_query) == (2, 1, "cat")


def test_feedback_falls_back_on_the_last_recall(state: AppState) -> None:
    rid = memory.remember(state, "alice", None, _items("the cat sleeps")).ids[0]
    assert memory.recall(state, "alice", "alice", None, "sleepy cat", 1).memories[0].id == rid
    assert memory.feedback(state, "alice", None, rid, True).feedback.relevant == 1
    col = state.memories("alice", None, create=False)
    assert col is not None and col[rid].metadata["feedback_last_query"] == "sleepy cat"
    with pytest.raises(NotFoundError, match="find ids with recall"):
        memory.feedback(state, "alice", None, "nope", True)


def test_update_merges_or_replaces_metadata(state: AppState) -> None:
    rid = memory.remember(state, "alice", None, [MemoryIn(text="x", metadata={"a": 1, "b": 2})]).ids[0]
    merged = memory.update(state, "alice", None, rid, metadata={"a": None, "c": 3})
    assert merged.memory.metadata == {"b": 2, "c": 3} and not merged.reembedded
    replaced = memory.update(state, "alice", None, rid, "y", {"d": 4}, replace_metadata=True)
    assert replaced.memory.metadata == {"d": 4} and replaced.reembedded and replaced.memory.created_at
    with pytest.raises(InvalidArgumentError, match="needs text, metadata"):
        memory.update(state, "alice", None, rid)


def test_forget_refuses_to_delete_everything(state: AppState) -> None:
    memory.remember(state, "alice", None, _items("a", "b"))
    for ids, flt in ((None, {}), (None, None), (["x"], {"a": 1})):
        with pytest.raises(InvalidArgumentError):
            memory.forget(state, "alice", None, ids, flt)
    assert memory.list_memories(state, "alice", "alice", None).total == 2


def test_list_pages_with_cursors_bound_to_their_namespace(state: AppState) -> None:
    memory.remember(state, "alice", None, _items(*(f"m{i}" for i in range(5))))
    page = memory.list_memories(state, "alice", "alice", None, limit=2)
    seen = [m.text for m in page.memories]
    while page.next_cursor is not None:
        page = memory.list_memories(state, "alice", "alice", None, page.next_cursor, limit=2)
        seen += [m.text for m in page.memories]
    assert seen == [f"m{i}" for i in range(5)]
    first = memory.list_memories(state, "alice", "alice", None, limit=2).next_cursor
    with pytest.raises(InvalidArgumentError, match="cursor"):
        memory.list_memories(state, "alice", "alice", "other", first)


def test_reads_need_a_grant(state: AppState) -> None:
    memory.remember(state, "bob", None, _items("bob's secret"))
    with pytest.raises(AccessDeniedError, match="grant"):
        memory.recall(state, "alice", "bob", None, "secret", 1)
    with pytest.raises(AccessDeniedError):
        memory.agent_stats(state, "bob", "alice")
    assert memory.grant(state, "bob", "alice").changed
    assert memory.recall(state, "alice", "bob", None, "secret", 1).memories[0].agent == "bob"
    stats = memory.agent_stats(state, "bob", "alice")
    assert stats.total_memories == 1 and stats.session is None  # another agent's session is not shown
    assert memory.revoke(state, "bob", "alice").changed and not memory.revoke(state, "bob", "alice").changed


def test_session_counters_lose_nothing_across_threads(state: AppState) -> None:
    s = state.session("alice")

    def work() -> None:
        for _ in range(2000):
            s.add(recalls=1, forgotten=2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (s.recalls, s.forgotten) == (8000, 16000)


def test_ingest_replaces_a_documents_chunks(state: AppState) -> None:
    with pytest.raises(InvalidArgumentError, match="overlap"):
        rag.prepare_ingest(state, "alice", "docs", [DocumentIn(text="x")], 100, 100)
    assert rag.list_collections(state, "alice").collections == []  # refused before creating anything
    long = " ".join(f"sentence {i} of the manual." for i in range(200))
    job = rag.prepare_ingest(state, "alice", "docs", [DocumentIn(text=long, id="m")], 500, 50)
    assert len(list(job.batches(size=3))) == -(-len(job.chunks) // 3)
    for batch in job.batches():
        rag.store_chunks(state, job, batch)
    again = rag.prepare_ingest(state, "alice", "docs", [DocumentIn(text="short manual", id="m")], 500, 50)
    assert again.replaced == len(job.chunks) and again.result().chunks == 1
    for batch in again.batches():
        rag.store_chunks(state, again, batch)
    assert rag.finish_ingest(again).replaced_chunks == len(job.chunks)  # deletes m#1.. of the old version
    found = rag.search_collection(state, "alice", "docs", "manual", 3)
    assert [h.id for h in found.hits] == ["m#0"] and found.hits[0].doc_id == "m"
    assert found.hits[0].score is not None and found.hits[0].score > 0.0
    assert rag.drop_collection(state, "alice", "docs").dropped
