"""Two stateless MCP HTTP servers in front of one sharded store (``embeddix-mcp --ray-address``): what one
remembers the other recalls, what one forgets the other no longer finds. Loopback only (see conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from embeddix_ray import RayEmbeddix
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``embeddix-mcp --transport streamable-http --ray-address ...`` as a subprocess."""

    def __init__(self, root: Path, address: str, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
        paths = [str(REPO), str(REPO / "mcp_server"), str(REPO / "integrations"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        args = [
            "--transport",
            "streamable-http",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-auth",
        ]
        args += ["--agent", "alice", "--embedder", "hash", "--data", str(root), "--ray-address", address]
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "embeddix_mcp", *args], env=env, stdout=subprocess.DEVNULL, stderr=err
            )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become healthy: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@asynccontextmanager
async def connect(srv: Server) -> AsyncIterator[Any]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120)) as http,
        Client(streamable_http_client(f"{srv.url}/mcp", http_client=http)) as client,
    ):
        yield client


async def ok(client: Any, name: str, **arguments: Any) -> dict[str, Any]:
    res = await client.call_tool(name, arguments)
    assert not res.is_error, f"{name} failed: {res.content}"
    return dict(res.structured_content)


async def test_two_servers_serve_one_sharded_store(ray_runtime: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    RayEmbeddix.open(root, shards=2).close()  # the store and its actors, as an operator would make them
    servers = [Server(root, ray_runtime, tmp_path / f"server-{i}.log") for i in range(2)]
    try:
        for srv in servers:
            srv.wait_healthy()
        texts = [
            f"fact number {i}: the {w} is by the river" for i, w in enumerate(["fox", "owl", "elk", "bee"])
        ]
        async with connect(servers[0]) as a, connect(servers[1]) as b:
            ids = (await ok(a, "remember", items=[{"text": t} for t in texts]))["ids"]
            got = await ok(b, "recall", query=texts[2], k=2)
            assert got["memories"][0]["id"] == ids[2]
            await ok(b, "forget", ids=[ids[2]])
            again = await ok(a, "recall", query=texts[2], k=4)
            assert ids[2] not in [m["id"] for m in again["memories"]]
            assert (await ok(a, "stats"))["total_memories"] == 3
    finally:
        for srv in servers:
            srv.stop()
            print(srv.log.read_text()[-4000:])
    db = RayEmbeddix.open(root)
    try:
        names = db.list_collections()
        assert names and sum(len(db.get_collection(n)) for n in names) == 3  # the memories live in the shards
    finally:
        db.shutdown()
