"""A streamable-HTTP server subprocess with two agents' tokens (hash embedder), and an MCP client for it.

Helpers are fixtures because this directory is not a package (as in ``tests/mcp``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[2]


@dataclass
class OpsServer:
    """The running server: its URL, data directory and each agent's token."""

    url: str
    port: int
    data: Path
    tokens: dict[str, str]  # agent -> token
    proc: subprocess.Popen[bytes]

    def headers(self, agent: str | None) -> dict[str, str]:
        return {} if agent is None else {"Authorization": f"Bearer {self.tokens[agent]}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsServer]:
    root = tmp_path_factory.mktemp("ops")
    tokens = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}
    token_file = root / "tokens.json"
    token_file.write_text(json.dumps({tok: agent for agent, tok in tokens.items()}))
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "mcp_server"), env.get("PYTHONPATH", "")])
    port = _free_port()
    args = ["--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--data", str(root / "data"), "--embedder", "hash", "--token-file", str(token_file)]
    with open(root / "server.log", "wb") as log:
        # stderr to a file: a pipe nobody reads would block the server once it fills
        proc = subprocess.Popen(
            [sys.executable, "-m", "embeddix_mcp", *args], env=env, stdout=subprocess.DEVNULL, stderr=log
        )
    srv = OpsServer(f"http://127.0.0.1:{port}", port, root / "data", tokens, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not become healthy within 60 s"
            try:
                if httpx.get(f"{srv.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def mcp_client(ops_server: OpsServer) -> Callable[[str], AbstractAsyncContextManager[Any]]:
    """``async with mcp_client("alice") as call:`` then ``await call("recall", query=...)``."""

    @asynccontextmanager
    async def connect(agent: str) -> AsyncIterator[Callable[..., Any]]:
        async with (
            httpx2.AsyncClient(
                headers=ops_server.headers(agent), timeout=httpx2.Timeout(30, read=60)
            ) as http,
            Client(streamable_http_client(f"{ops_server.url}/mcp", http_client=http)) as client,
        ):

            async def call(tool: str, /, **arguments: Any) -> dict[str, Any]:
                res = await client.call_tool(tool, arguments)
                assert not res.is_error, res.content
                assert res.structured_content is not None
                return res.structured_content

            yield call

    return connect
