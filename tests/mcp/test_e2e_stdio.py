"""End to end over a real transport: the SDK's stdio client spawning ``python -m embeddix_mcp``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters


def _params(data: Path, env: dict[str, str], *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "embeddix_mcp", "--data", str(data), "--agent", "e2e", "--embedder", "hash", *extra],
        env=env,
        cwd=str(data.parent),
    )


async def test_stdio_remember_recall_stream_forget_feedback(tmp_path: Path, server_env, tools) -> None:
    data = tmp_path / "data"
    progress: list[tuple[float, float | None, dict[str, Any]]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, json.loads(message or "{}")))

    async with Client(_params(data, server_env(EMBEDDIX_INDEX_THRESHOLD="0"))) as c:
        t = tools(c)
        assert c.server_info is None or c.server_info.name == "embeddix"
        ids = (
            await t.ok(
                "remember",
                items=[
                    {"text": "The user's favourite colour is teal", "metadata": {"tags": ["prefs"]}},
                    {
                        "text": "The user has a dentist appointment on Monday",
                        "metadata": {"tags": ["calendar"]},
                    },
                    {"text": "The user speaks Portuguese and English"},
                ],
            )
        )["ids"]
        got = await t.ok("recall", query="The user's favourite colour is teal", k=2)
        assert got["memories"][0]["id"] == ids[0] and got["memories"][0]["score"] == 1.0
        res = await c.call_tool(
            "stream", {"query": "dentist appointment", "k": 2}, progress_callback=on_progress
        )
        assert not res.is_error and res.structured_content is not None
        n = len(res.structured_content["passes"])
        assert n >= 2 and [p[0] for p in progress] == list(range(1, n + 1)) and progress[-1][1] == n
        assert progress[0][2]["memories"][0]["id"] == ids[1] == res.structured_content["memories"][0]["id"]
        fb = await t.ok("feedback", id=ids[1], relevant=True)
        assert fb["feedback"] == {"relevant": 1, "irrelevant": 0}
        assert (await t.ok("forget", ids=[ids[2]]))["deleted"] == 1
        assert "less than or equal to 100" in await t.err("recall", query="x", k=101)
        assert (await t.ok("list_memories"))["total"] == 2


@pytest.mark.slow
async def test_stdio_memories_survive_a_server_restart(tmp_path: Path, server_env, tools) -> None:
    data = tmp_path / "data"
    async with Client(_params(data, server_env())) as c:
        t = tools(c)
        ids = (await t.ok("remember", items=[{"text": "Water the plants on Sunday"}, {"text": "Call mum"}]))[
            "ids"
        ]
        await t.ok("feedback", id=ids[0], relevant=True)
        await t.ok("grant", to_agent="partner")
    async with Client(_params(data, server_env())) as c:
        t = tools(c)
        got = await t.ok("recall", query="Water the plants on Sunday", k=5)
        stats = await t.ok("stats")
    assert [m["id"] for m in got["memories"]] == ids
    assert got["memories"][0]["feedback"]["relevant"] == 1
    assert [g["grantee"] for g in stats["grants_given"]] == ["partner"]
