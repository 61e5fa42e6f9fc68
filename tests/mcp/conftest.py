"""Fixtures for the MCP server tests: servers on a temporary data directory with the hash embedder, and a
small helper that calls a tool and returns its structured output (or its error text).

Helpers are handed out as fixtures because this directory is not a package (a ``tests/mcp/__init__.py``
would shadow the ``mcp`` SDK).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import Client
from mcp.server.mcpserver import MCPServer

from embeddix_mcp import ServerSettings, build_server

REPO = Path(__file__).resolve().parents[2]


class Tools:
    """Call tools on a connected client: ``ok`` returns structured output, ``err`` the error text."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def ok(self, name: str, /, **arguments: Any) -> dict[str, Any]:
        res = await self.client.call_tool(name, arguments)
        text = res.content[0].text if res.content else ""  # type: ignore[union-attr]
        assert not res.is_error, f"{name} failed: {text}"
        assert text, f"{name} returned no readable text"
        assert res.structured_content is not None
        return res.structured_content

    async def err(self, name: str, /, **arguments: Any) -> str:
        res = await self.client.call_tool(name, arguments)
        assert res.is_error, f"{name} should have failed: {res.structured_content}"
        return res.content[0].text  # type: ignore[union-attr]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_server(data_dir: Path) -> Callable[..., MCPServer[Any]]:
    """``make_server(agent="alice", **settings)``: a server on the test's data directory, hash embedder."""

    def make(agent: str = "alice", **overrides: Any) -> MCPServer[Any]:
        values: dict[str, Any] = {"data": str(data_dir), "agent": agent, "embedder": "hash", **overrides}
        return build_server(ServerSettings(**values))

    return make


@pytest.fixture
def tools() -> type[Tools]:
    return Tools


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a server subprocess: the repo's source roots on PYTHONPATH (no install needed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "mcp_server"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@pytest.fixture
def server_env() -> Callable[..., dict[str, str]]:
    return subprocess_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HttpServer:
    """An ``embeddix-mcp --transport streamable-http`` subprocess on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # stderr to a file, not a pipe: a pipe nobody reads would block the server once it fills.
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "embeddix_mcp",
                    "--transport",
                    "streamable-http",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *args,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become healthy within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def spawn_http() -> Callable[[list[str], Path], HttpServer]:
    """``spawn_http(args, log_path)``: start a server subprocess (the caller stops it)."""

    def spawn(args: list[str], log: Path) -> HttpServer:
        return HttpServer(args, subprocess_env(), log)

    return spawn
