"""Remember and recall through the Embeddix MCP server, as an MCP host would (this is what ``make run`` runs).

Starts ``embeddix-mcp`` as a subprocess over stdio with the MCP SDK's client, stores a few memories, asks
questions about them (plain, filtered, hybrid and streamed), gives feedback and prints the statistics.

    python examples/mcp_demo.py --data ./embeddix-data            # the real offline model (all-MiniLM-L6-v2)
    python examples/mcp_demo.py --data /tmp/demo --embedder hash  # a fast deterministic test embedder

Running it again is harmless: ``dedupe_threshold`` turns a repeated memory into an update.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

REPO = Path(__file__).resolve().parents[1]

MEMORIES = [
    {
        "text": "The user's name is Ana and she lives in Porto",
        "metadata": {"tags": ["profile"], "importance": 0.9},
    },
    {"text": "Ana is allergic to penicillin", "metadata": {"tags": ["health"], "importance": 1.0}},
    {"text": "Ana prefers short answers with code examples", "metadata": {"tags": ["preferences"]}},
    {
        "text": "Ana's team ships the mobile app release every second Thursday",
        "metadata": {"tags": ["work"], "source": "meeting"},
    },
    {"text": "Ana is learning Japanese and practises every morning", "metadata": {"tags": ["hobbies"]}},
    {"text": "Ana's laptop is a MacBook Air with 16 GB of memory", "metadata": {"tags": ["things"]}},
]
QUESTIONS = [
    ("Which medicines should be avoided?", {}),
    ("How should I format my replies?", {}),
    ("When is the next release?", {"filter": {"tags": {"$contains": "work"}}}),
    ("Japanese", {"text_weight": 0.5}),
]


def server_params(data: str, embedder: str, agent: str) -> StdioServerParameters:
    """Run the server with this interpreter; the repo's source roots on PYTHONPATH work without an install."""
    path = os.pathsep.join(
        p for p in (str(REPO), str(REPO / "mcp_server"), os.environ.get("PYTHONPATH")) if p
    )
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "embeddix_mcp", "--data", data, "--agent", agent, "--embedder", embedder],
        env={"PYTHONPATH": path},
    )


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


def show(memories: list[dict[str, Any]]) -> None:
    for m in memories:
        tags = f"  [{', '.join(m['tags'])}]" if m["tags"] else ""
        print(f"    {m['score']:.3f}  {m['text']}{tags}")


async def main(data: str, embedder: str, agent: str) -> None:
    print(f"Starting embeddix-mcp over stdio (data={data}, embedder={embedder}, agent={agent}) ...")
    async with Client(server_params(data, embedder, agent), read_timeout_seconds=300) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        print(f"Connected (protocol {client.protocol_version}); tools: {', '.join(tools)}\n")

        stored = await call(client, "remember", items=MEMORIES, dedupe_threshold=0.95)
        print(f"remember: {len(stored['ids'])} memories ({len(stored['updated'])} already known, updated)\n")

        for question, options in QUESTIONS:
            got = await call(client, "recall", query=question, k=2, **options)
            how = f"  ({json.dumps(options)})" if options else ""
            print(f"recall: {question!r}{how}")
            show(got["memories"])
        print()

        async def progress(done: float, total: float | None, message: str | None) -> None:
            partial = json.loads(message or "{}")
            best = partial["memories"][0]["text"] if partial.get("memories") else "-"
            print(f"    pass {partial.get('pass')}/{total:g} (ef={partial.get('ef')}): best so far: {best}")

        print("stream: 'Where does the user live?'")
        res = await client.call_tool(
            "stream", {"query": "Where does the user live?", "k": 2}, progress_callback=progress
        )
        assert res.structured_content is not None
        final = res.structured_content["memories"]
        show(final)

        if final:
            fb = await call(client, "feedback", id=final[0]["id"], relevant=True)
            print(f"\nfeedback: {final[0]['id']} marked relevant -> {fb['feedback']}")
        stats = await call(client, "stats")
        print(
            f"stats: agent {stats['agent']!r} has {stats['total_memories']} memories; "
            f"embedder {stats['embedder']} ({stats['dim']}-d)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="./embeddix-data", help="data directory (default ./embeddix-data)")
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    parser.add_argument("--agent", default="demo")
    args = parser.parse_args()
    anyio.run(main, args.data, args.embedder, args.agent)
