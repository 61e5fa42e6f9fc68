"""End to end over streamable HTTP: a server subprocess on a free loopback port with two bearer tokens."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

ALICE = secrets.token_urlsafe(24)
BOB = secrets.token_urlsafe(24)
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="subprocess HTTP server tests are POSIX-only")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, spawn_http: Callable[..., Any]) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("http")
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps({ALICE: "alice", BOB: "bob"}))
    srv = spawn_http(
        [
            "--data",
            str(root / "data"),
            "--embedder",
            "hash",
            "--token-file",
            str(tokens),
            "--max-body-bytes",
            "65536",
        ],
        root / "server.log",
    )
    yield srv
    srv.stop()


@asynccontextmanager
async def connect(srv: Any, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)
        ) as http,
        Client(streamable_http_client(f"{srv.url}/mcp", http_client=http)) as client,
    ):
        yield client


def test_health_auth_host_origin_and_body_limits(server: Any) -> None:
    url = f"{server.url}/mcp"
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    no_token = httpx.post(url, json=INIT, headers=MCP_HEADERS)
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(
        url, json=INIT, headers={**MCP_HEADERS, "Authorization": "Bearer not-a-valid-token-at-all"}
    )
    assert wrong.status_code == 401
    auth = {**MCP_HEADERS, "Authorization": f"Bearer {ALICE}"}
    bad_host = httpx.post(url, json=INIT, headers={**auth, "Host": f"evil.example:{server.port}"})
    assert bad_host.status_code == 421
    bad_origin = httpx.post(url, json=INIT, headers={**auth, "Origin": "http://evil.example"})
    assert bad_origin.status_code == 403
    too_big = httpx.post(url, content=b"{" + b" " * 100_000 + b"}", headers=auth)
    assert too_big.status_code == 413
    ok = httpx.post(url, json=INIT, headers={**auth, "Origin": f"http://localhost:{server.port}"})
    assert ok.status_code == 200


async def test_twenty_concurrent_clients_without_errors(server: Any, tools) -> None:
    errors: list[BaseException] = []
    results: dict[int, dict[str, Any]] = {}

    async def one(i: int) -> None:
        try:
            async with connect(server, ALICE if i % 2 else BOB) as c:
                t = tools(c)
                text = f"concurrent client {i} remembers the number {i * 7919}"
                mid = (await t.ok("remember", text=text, namespace="load"))["ids"][0]
                got = await t.ok("recall", query=text, k=1, namespace="load")
                assert got["memories"][0]["id"] == mid
                results[i] = got["memories"][0]
        except BaseException as exc:  # counted, not raised: the test reports how many failed
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    assert errors == []
    assert len(results) == 20
    assert all(m["score"] == 1.0 for m in results.values())
    assert {m["agent"] for i, m in results.items() if i % 2} == {"alice"}
    assert {m["agent"] for i, m in results.items() if not i % 2} == {"bob"}


async def test_tokens_isolate_agents_and_grants_share_read_only(server: Any, tools) -> None:
    secret = "alice keeps her spare key under the blue flowerpot"
    async with connect(server, ALICE) as ca, connect(server, BOB) as cb:
        a, b = tools(ca), tools(cb)
        mid = (await a.ok("remember", text=secret, namespace="home"))["ids"][0]
        assert (await b.ok("recall", query=secret, namespace="home"))["memories"] == []
        assert "has not granted" in await b.err("recall", query=secret, namespace="home", from_agent="alice")
        await a.ok("grant", to_agent="bob", namespace="home")
        got = await b.ok("recall", query=secret, namespace="home", from_agent="alice")
        assert got["memories"][0]["id"] == mid and got["memories"][0]["agent"] == "alice"
        assert (await b.ok("forget", ids=[mid], namespace="home"))["deleted"] == 0
        await a.ok("revoke", to_agent="bob", namespace="home")
        assert "has not granted" in await b.err("recall", query=secret, namespace="home", from_agent="alice")
        assert (await a.ok("recall", query=secret, namespace="home"))["memories"][0]["id"] == mid


def test_serving_beyond_loopback_requires_a_token(tmp_path: Path) -> None:
    from embeddix_mcp.cli import main

    assert main(["--transport", "streamable-http", "--host", "0.0.0.0", "--data", str(tmp_path)]) == 2
