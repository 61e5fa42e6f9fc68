"""``/metrics`` and ``/api/v1/performance/*`` on a real streamable-HTTP server, driven by a real MCP client.

The acceptance of issue #18: the exposition parses with ``prometheus_client.parser`` after real traffic and
its counters move by what was done; every route refuses a call without a valid token (401) and the config
route refuses invalid values (422) and changes nothing then.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="subprocess HTTP server tests are POSIX-only")

API = "/api/v1/performance"
ROUTES = [
    ("GET", "/metrics"),
    ("GET", f"{API}/metrics"),
    ("PUT", f"{API}/config"),
    ("POST", f"{API}/profile/latency"),
    ("GET", f"{API}/recommendations"),
]


def scrape(srv: Any, agent: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` as seen by ``agent``: (name, sorted labels) -> value."""
    res = httpx.get(f"{srv.url}/metrics", headers=srv.headers(agent))
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(res.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_real_mcp_traffic(ops_server: Any, mcp_client: Any) -> None:
    async with mcp_client("alice") as call:
        for i in range(3):
            await call("remember", text=f"alice's fact number {i}: the kettle is blue {i}")
        before = scrape(ops_server, "alice")
        n = 5
        for i in range(n):
            await call("recall", query=f"what colour is the kettle {i}", k=2)
        await call("recall", query="what colour is the kettle 0", k=2)  # a repeat: the cache serves it
        after = scrape(ops_server, "alice")

    col = {"collection": "agent:alice"}
    search = "embeddix_operation_duration_seconds_count"
    assert value(after, search, **col, operation="search") - value(
        before, search, **col, operation="search"
    ) == (n + 1)
    assert value(before, search, **col, operation="upsert") == 3  # each remember: one upsert
    inf = {**col, "operation": "search", "le": "+Inf"}
    assert value(after, "embeddix_operation_duration_seconds_bucket", **inf) == value(
        after, search, **col, operation="search"
    )
    assert value(after, "embeddix_operation_duration_seconds_sum", **col, operation="search") > 0
    hits = "embeddix_cache_hits_total"
    assert value(after, hits, **col, tier="exact") - value(before, hits, **col, tier="exact") >= 1
    texts = "embeddix_embed_texts_total"
    assert value(after, texts, model="hash-384-v1") - value(before, texts, model="hash-384-v1") == n + 1
    assert value(after, "embeddix_collection_records", **col) == 3
    info = [k for k in after if k[0] == "embeddix_index_info" and ("collection", "agent:alice") in k[1]]
    assert info and ("kind", "exact") in info[0][1]
    assert ("process_resident_memory_bytes", ()) in after  # the process collector rides along

    # bob sees his own collections only; alice's name does not appear in his scrape
    async with mcp_client("bob") as call:
        await call("remember", text="bob keeps notes too")
    bobs = scrape(ops_server, "bob")
    assert value(bobs, "embeddix_collection_records", collection="agent:bob") == 1
    assert not any(("collection", "agent:alice") in labels for _, labels in bobs)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_wants_the_token(ops_server: Any, method: str, path: str) -> None:
    url = ops_server.url + path
    body = {"json": {"ef_search": 50}} if method == "PUT" else {}
    for headers in ({}, {"Authorization": "Bearer not-a-valid-token-at-all"}, {"Authorization": "Basic x"}):
        res = httpx.request(method, url, headers=headers, **body)
        assert res.status_code == 401, (path, headers, res.text)
        assert res.headers["www-authenticate"].startswith("Bearer")
    # the Host check of /mcp applies too (DNS rebinding)
    evil = {**ops_server.headers("alice"), "Host": f"evil.example:{ops_server.port}"}
    assert httpx.request(method, url, headers=evil, **body).status_code == 421


def _json(res: httpx.Response) -> dict[str, Any]:
    assert res.headers["content-type"] == "application/json", res.text
    out: dict[str, Any] = res.json()
    return out


async def test_config_validates_then_applies(ops_server: Any, mcp_client: Any) -> None:
    async with mcp_client("alice") as call:
        await call("remember", text="alice's settings test needs her collection to exist")
    url = f"{ops_server.url}{API}/config"
    alice = ops_server.headers("alice")
    metrics_url = f"{ops_server.url}{API}/metrics"
    snap = _json(httpx.get(metrics_url, headers=alice))
    ef_before = snap["collections"]["agent:alice"]["index"]["ef_search"]
    for bad in (
        {"ef_search": 0},
        {"ef_search": "64"},
        {"ef_search": 64.5},
        {"index_threshold": -1},
        {"bogus": 1},
        {},
        {"collections": "agent:alice", "ef_search": 64},
        {"ef_search": 64, "personalization": {"w_profile": 2.0}},  # the core's check, before any change
        {"ef_search": 64, "personalization": {"no_such_weight": 0.1}},
    ):
        res = httpx.put(url, json=bad, headers=alice)
        assert res.status_code == 422, (bad, res.text)
        assert _json(res)["error"] in ("invalid_request", "invalid_value")
    not_json = httpx.put(url, content=b"{ef_search:", headers={**alice, "Content-Type": "application/json"})
    assert not_json.status_code == 422
    form = httpx.put(url, content=b"ef_search=64", headers={**alice, "Content-Type": "text/plain"})
    assert form.status_code == 400  # JSON only, as on /mcp (a browser form cannot send it)
    huge = httpx.put(url, json={"collections": ["x" * 100] * 1000, "ef_search": 64}, headers=alice)
    assert huge.status_code == 413
    snap = _json(httpx.get(metrics_url, headers=alice))
    assert snap["collections"]["agent:alice"]["index"]["ef_search"] == ef_before  # nothing changed

    ok = httpx.put(
        url,
        json={"collections": ["agent:alice"], "ef_search": 123, "personalization": {"w_profile": 0.3}},
        headers=alice,
    )
    assert ok.status_code == 200, ok.text
    applied = _json(ok)["applied"]["agent:alice"]
    assert applied["ef_search"] == 123 and applied["personalization"]["w_profile"] == 0.3
    samples = scrape(ops_server, "alice")
    assert value(samples, "embeddix_index_ef_search", collection="agent:alice") == 123
    # another agent's collection is absent for bob, with the message of a collection that does not exist
    bob = httpx.put(
        url, json={"collections": ["agent:alice"], "ef_search": 50}, headers=ops_server.headers("bob")
    )
    missing = httpx.put(url, json={"collections": ["agent:nobody"], "ef_search": 50}, headers=alice)
    assert bob.status_code == missing.status_code == 404
    assert "agent:alice" in bob.json()["detail"] and bob.json()["error"] == missing.json()["error"]


async def test_profiles_and_recommendations(ops_server: Any, mcp_client: Any) -> None:
    async with mcp_client("alice") as call:
        await call("remember", text="alice's profile test needs her collection to exist")
    alice = ops_server.headers("alice")
    unknown = httpx.post(f"{ops_server.url}{API}/profile/turbo", headers=alice)
    assert unknown.status_code == 404 and "latency" in unknown.json()["detail"]
    bad = httpx.post(
        f"{ops_server.url}{API}/profile/latency", json={"collections": "agent:alice"}, headers=alice
    )
    assert bad.status_code == 422
    res = httpx.post(
        f"{ops_server.url}{API}/profile/latency", json={"collections": ["agent:alice"]}, headers=alice
    )
    assert res.status_code == 200, res.text
    started = res.json()["applied"]["agent:alice"]
    assert started["target"]["profile"] == "latency" and started["target"]["index"] == "hnsw"
    assert 0.0 <= started["progress"] <= 1.0 and started["error"] is None
    samples = scrape(ops_server, "alice")
    assert ("embeddix_background_reconfiguring", (("collection", "agent:alice"),)) in samples

    recs = _json(httpx.get(f"{ops_server.url}{API}/recommendations", headers=alice))
    assert isinstance(recs["recommendations"], list)
    for r in recs["recommendations"]:
        assert r["measurement"] and r["message"] and r["collection"] in recs["collections"]
    snap = _json(httpx.get(f"{ops_server.url}{API}/metrics", headers=alice))
    assert snap["version"] == 1 and "hash-384-v1" in snap["embed"]
    assert set(snap["collections"]) <= {"agent:alice"} | {
        n for n in snap["collections"] if n.startswith("docs:alice:")
    }
