"""Two MCP servers on one data directory (the README's one-entry-per-agent setup): each sees the other's
writes, including forgets and updates, at once (issue #12, defect 2: a memory forgotten through server B
was still recalled through A after B closed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mcp.client import Client


async def test_forget_through_one_server_is_never_recalled_through_the_other(
    make_server: Callable[..., Any], tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an HNSW collection (the defect needed one): a small switch-over threshold
    monkeypatch.setenv("EMBEDDIX_INDEX_THRESHOLD", "20")
    texts = [f"memory number {i} about topic {i % 7}" for i in range(60)]
    async with Client(make_server("alice")) as a:
        ta = tools(a)
        ids = (await ta.ok("remember", items=[{"text": t} for t in texts]))["ids"]
        target = texts[13]
        first = await ta.ok("recall", query=target, k=3)
        assert first["memories"][0]["id"] == ids[13]
        before = await ta.ok("recall", query=texts[14], k=3)  # caches the row of ids[14]
        assert before["memories"][0]["id"] == ids[14]
        async with Client(make_server("alice")) as b:  # the same agent, a second server process-alike
            tb = tools(b)
            await tb.ok("forget", ids=[ids[13]])
            await tb.ok("update", id=ids[14], text="rewritten through the other server")
        # b is closed now: its close wrote an index snapshot and pruned the deletion it contains
        again = await ta.ok("recall", query=target, k=3)  # the very query A answered before
        assert ids[13] not in [m["id"] for m in again["memories"]]
        old_row = await ta.ok("recall", query=texts[14], k=3)
        assert all(m["text"] != texts[14] for m in old_row["memories"])
        rewritten = await ta.ok("recall", query="rewritten through the other server", k=1)
        assert rewritten["memories"][0]["id"] == ids[14]
        assert rewritten["memories"][0]["text"] == "rewritten through the other server"
