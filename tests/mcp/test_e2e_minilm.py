"""End to end with the real embedding model (all-MiniLM-L6-v2, offline) behind the stdio transport."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

pytestmark = pytest.mark.slow

MEMORIES = [
    "The user has a golden retriever called Biscuit",
    "The user is training for the Berlin marathon in September",
    "The user's sister lives in Toronto and works as an architect",
    "The user does not eat meat",
    "The user's laptop is a ThinkPad running Fedora",
]


def _minilm_available() -> bool:
    try:
        from embeddix_core.embeddings._model_files import bundled_model_path

        bundled_model_path()
    except ImportError:  # MissingExtraError is an ImportError
        return False
    return True


@pytest.mark.skipif(not _minilm_available(), reason="the MiniLM model (extra 'embed') is not installed")
async def test_minilm_recall_by_meaning_over_stdio(tmp_path: Path, server_env, tools) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "embeddix_mcp",
            "--data",
            str(tmp_path / "data"),
            "--agent",
            "real",
            "--embedder",
            "minilm",
        ],
        env=server_env(),
        cwd=str(tmp_path),
    )
    async with Client(params, read_timeout_seconds=300) as c:
        t = tools(c)
        ids = (await t.ok("remember", items=[{"text": m} for m in MEMORIES]))["ids"]
        cases = {
            "What kind of pet does the user have?": 0,
            "Which race is the user preparing for?": 1,
            "Is the user vegetarian?": 3,
            "What operating system does the user use?": 4,
            "Where does the user's sibling live?": 2,
        }
        for question, expected in cases.items():
            got = await t.ok("recall", query=question, k=3)
            assert got["memories"][0]["id"] == ids[expected], (question, got["memories"][0]["text"])
            assert 0.2 < got["memories"][0]["score"] < 1.0
        same = await t.ok("recall", query=MEMORIES[2], k=1)
        assert same["memories"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        stats = await t.ok("stats")
        assert stats["embedder"] == "sentence-transformers/all-MiniLM-L6-v2" and stats["dim"] == 384
        dup = await t.ok(
            "remember", text="The user owns a golden retriever named Biscuit", dedupe_threshold=0.9
        )
        assert dup["updated"] == [ids[0]]
