"""What the model reads: one clean sentence per error, and counts that agree with their nouns."""

from __future__ import annotations

from typing import Any

from mcp.client import Client

from embeddix_mcp.render import count


async def _text(client: Client, name: str, **arguments: Any) -> str:
    res = await client.call_tool(name, arguments)
    assert not res.is_error, res.content
    return res.content[0].text  # type: ignore[union-attr]


def test_count_agrees_with_its_noun() -> None:
    assert [count(n, "memory", "memories") for n in (0, 1, 2)] == ["0 memories", "1 memory", "2 memories"]
    assert count(1, "chunk") == "1 chunk" and count(3, "chunk") == "3 chunks"


async def test_many_invalid_items_give_one_sentence_without_a_pydantic_dump(make_server, tools) -> None:
    bad_items = [{"text": ""}, {"text": 3}, {"metadata": "x"}, {"text": "ok", "id": "bad id"}, {"text": None}]
    async with Client(make_server()) as c:
        message = await tools(c).err("remember", items=bad_items)
        one = await tools(c).err("remember", text="x", metadata={"importance": 7})
    for text in (message, one):
        assert "\n" not in text and "validation error" not in text and "pydantic" not in text, text
        assert "http" not in text and "input_value" not in text, text
    assert message.startswith("Error executing tool remember: invalid arguments items.0.text:"), message
    assert "more)" in message  # the rest are counted, not dumped
    assert "importance" in one


async def test_counts_and_namespaces_read_as_english(make_server) -> None:
    async with Client(make_server()) as c:
        stored = await _text(c, "remember", text="The cat sleeps on the red sofa")
        recalled = await _text(c, "recall", query="The cat sleeps on the red sofa", k=3)
        listed = await _text(c, "list_memories")
        stats = await _text(c, "stats")
        granted = await _text(c, "grant", to_agent="bob")
        ingested = await _text(c, "ingest", collection="notes", documents=[{"text": "One short note."}])
        res = await c.call_tool("list_memories", {})
        mid = res.structured_content["memories"][0]["id"]  # type: ignore[index]
        forgot = await _text(c, "forget", ids=[mid])
    assert stored.startswith("Remembered 1 item in the main namespace: 1 new")
    assert recalled.startswith("1 memory for ") and listed.startswith("1 of 1 memory:")
    assert "Agent alice: 1 memory" in stats and "1 memories" not in stats
    assert granted == "bob can now read the main namespace of your memories."
    assert ingested.startswith("Ingested 1 document as 1 chunk into 'notes'")
    assert forgot == "Deleted 1 memory."
    for text in (stored, recalled, listed, stats, granted, ingested, forgot):
        assert "your the" not in text and "(s)" not in text and " 1 memories" not in text, text
