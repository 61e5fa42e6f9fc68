"""autogen_embeddix: the Memory protocol, mime types, component config, and an agent using the memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import MemoryQueryEvent, TextMessage
from autogen_core.memory import MemoryContent, MemoryMimeType
from autogen_core.model_context import BufferedChatCompletionContext, UnboundedChatCompletionContext
from autogen_core.models import SystemMessage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

import autogen_embeddix
from autogen_embeddix import EmbeddixMemory, EmbeddixMemoryConfig
from embeddix_core import InvalidArgumentError, InvalidMetadataError, ModelMismatchError
from embeddix_core.embeddings import HashEmbedder

FACTS = [
    "The user lives in Lyon, France",
    "The user is allergic to peanuts",
    "The user's favourite programming language is Rust",
]


def text(content: str, **metadata: object) -> MemoryContent:
    return MemoryContent(content=content, mime_type=MemoryMimeType.TEXT, metadata=dict(metadata) or None)


async def _memory(**kwargs: object) -> EmbeddixMemory:
    memory = EmbeddixMemory(embedder="hash", **kwargs)  # type: ignore[arg-type]
    for i, fact in enumerate(FACTS):
        await memory.add(text(fact, n=i))
    return memory


def test_exported_names() -> None:
    assert autogen_embeddix.__all__ == ["EmbeddixMemory", "EmbeddixMemoryConfig"]
    assert autogen_embeddix.__all__ == sorted(autogen_embeddix.__all__)
    for name in autogen_embeddix.__all__:
        assert getattr(autogen_embeddix, name) is not None


async def test_add_and_query() -> None:
    memory = await _memory(k=2)
    result = await memory.query("Which city does the user live in? Lyon")
    assert len(result.results) == 2
    top = result.results[0]
    assert top.content == FACTS[0] and top.mime_type == MemoryMimeType.TEXT
    assert top.metadata is not None and top.metadata["n"] == 0
    assert set(top.metadata) == {"n", "score", "id"}
    scores = [m.metadata["score"] for m in result.results if m.metadata]
    assert scores == sorted(scores, reverse=True)
    assert len((await memory.query("Lyon", k=3)).results) == 3
    only = await memory.query(text("peanuts allergic"), k=3, filter={"n": 1})
    assert [m.content for m in only.results] == [FACTS[1]]
    with pytest.raises(TypeError, match="unexpected keyword"):
        await memory.query("x", top_k=3)
    await memory.close()


async def test_score_threshold() -> None:
    memory = await _memory(k=3, score_threshold=0.9)
    result = await memory.query("The user is allergic to peanuts")
    assert [m.content for m in result.results] == [FACTS[1]]
    assert len((await memory.query("The user is allergic to peanuts", score_threshold=None)).results) == 3


async def test_mime_types() -> None:
    memory = EmbeddixMemory(embedder="hash", k=5)
    await memory.add(
        MemoryContent(content={"units": "metric", "days": [1, 2]}, mime_type=MemoryMimeType.JSON)
    )
    await memory.add(MemoryContent(content='{"theme": "dark"}', mime_type="application/json"))
    await memory.add(MemoryContent(content="# Diet\nvegetarian", mime_type=MemoryMimeType.MARKDOWN))
    by_type = {m.mime_type: m.content for m in (await memory.query("units metric theme dark diet")).results}
    assert by_type[MemoryMimeType.MARKDOWN] == "# Diet\nvegetarian"
    jsons = [
        m.content for m in (await memory.query("units", filter={"mime_type": "application/json"})).results
    ]
    assert {"units": "metric", "days": [1, 2]} in jsons and {"theme": "dark"} in jsons
    with pytest.raises(InvalidArgumentError, match="got 'image/\\*'"):
        await memory.add(MemoryContent(content=b"\x89PNG", mime_type=MemoryMimeType.IMAGE))
    with pytest.raises(InvalidArgumentError, match="application/octet-stream"):
        await memory.add(MemoryContent(content=b"\x00", mime_type=MemoryMimeType.BINARY))
    with pytest.raises(InvalidArgumentError, match="must be a str"):
        await memory.add(MemoryContent(content={"a": 1}, mime_type=MemoryMimeType.TEXT))
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        await memory.add(MemoryContent(content="{nope", mime_type=MemoryMimeType.JSON))
    with pytest.raises(InvalidMetadataError, match="must be flat"):
        await memory.add(MemoryContent(content="x", mime_type=MemoryMimeType.TEXT, metadata={"a": {"b": 1}}))


async def test_update_context_inserts_a_system_message() -> None:
    memory = await _memory(k=1)
    context = BufferedChatCompletionContext(buffer_size=10)
    assert (await memory.update_context(context)).memories.results == []
    await context.add_message(
        UserMessage(content="Remind me: what is the user allergic to? peanuts", source="user")
    )
    result = await memory.update_context(context)
    assert [m.content for m in result.memories.results] == [FACTS[1]]
    messages = await context.get_messages()
    assert isinstance(messages[-1], SystemMessage)
    assert "1. The user is allergic to peanuts" in messages[-1].content


async def test_clear_and_close_reopen_on_disk(tmp_path: Path) -> None:
    memory = await _memory(path=str(tmp_path), k=3)
    await memory.close()
    await memory.close()  # idempotent
    assert len((await memory.query("user")).results) == 3  # reopened lazily
    again = EmbeddixMemory(path=str(tmp_path), embedder="hash")
    assert len((await again.query("user", k=10)).results) == 3
    col = again.collection
    assert await again.clear() is None
    assert (await memory.query("user")).results == []
    # clear() is the core's Collection.clear(): the collection stays and takes new memories.
    assert again.collection is col and len(col) == 0
    await again.add(text(FACTS[0]))
    assert len((await again.query("user", k=10)).results) == 1
    await again.close()
    await memory.close()


async def test_another_embedding_model_is_refused(tmp_path: Path) -> None:
    memory = await _memory(path=str(tmp_path))
    await memory.close()
    other = EmbeddixMemory(path=str(tmp_path), embedder="hash-384-seed3")
    with pytest.raises(ModelMismatchError, match="hash-384-v1"):
        await other.query("user")
    await other.close()


async def test_dump_and_load_component(tmp_path: Path) -> None:
    memory = await _memory(path=str(tmp_path), collection_name="notes", k=2, score_threshold=0.1)
    model = memory.dump_component()
    assert model.provider == "autogen_embeddix.EmbeddixMemory"
    assert model.component_type == "memory"
    config = EmbeddixMemoryConfig.model_validate(model.config)
    assert config == EmbeddixMemoryConfig(
        collection_name="notes", path=str(tmp_path), k=2, score_threshold=0.1, embedder="hash"
    )
    loaded = EmbeddixMemory.load_component(model.model_dump())
    assert isinstance(loaded, EmbeddixMemory)
    assert loaded.dump_component().config == model.config
    await memory.close()
    assert (await loaded.query("Lyon France")).results[0].content == FACTS[0]
    await loaded.close()


async def test_embedder_object_is_dumped_by_model_id() -> None:
    memory = EmbeddixMemory(embedder=HashEmbedder(dim=64))
    assert memory.dump_component().config["embedder"] == "hash-64-v1"
    loaded = EmbeddixMemory.load_component(memory.dump_component())
    await loaded.add(text("x"))
    assert loaded.collection.dim == 64


def test_constructor_validates() -> None:
    with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
        EmbeddixMemory(k=0)
    with pytest.raises(InvalidArgumentError, match="score_threshold"):
        EmbeddixMemory(score_threshold=2.0)
    with pytest.raises(InvalidArgumentError, match="unknown embedder"):
        EmbeddixMemory(embedder="nope")


async def test_assistant_agent_sees_recalled_memories() -> None:
    memory = await _memory(k=2)
    client = ReplayChatCompletionClient(["You are allergic to peanuts."])
    agent = AssistantAgent(
        "assistant", model_client=client, memory=[memory], model_context=UnboundedChatCompletionContext()
    )
    result = await agent.run(task="What food am I allergic to? peanuts?")
    events = [m for m in result.messages if isinstance(m, MemoryQueryEvent)]
    assert len(events) == 1 and events[0].content[0].content == FACTS[1]
    sent = client.create_calls[0]["messages"]
    memory_messages = [
        m for m in sent if isinstance(m, SystemMessage) and "Relevant memory content" in m.content
    ]
    assert len(memory_messages) == 1 and "1. The user is allergic to peanuts" in memory_messages[0].content
    final = result.messages[-1]
    assert isinstance(final, TextMessage) and final.content == "You are allergic to peanuts."
    await memory.close()


@pytest.mark.slow
async def test_end_to_end_with_minilm(tmp_path: Path) -> None:
    memory = EmbeddixMemory(path=str(tmp_path), k=1)  # the default offline MiniLM
    for fact in FACTS:
        await memory.add(text(fact))
    assert (await memory.query("Which city is the user's home?")).results[0].content == FACTS[0]
    assert (await memory.query("What should the user never eat?")).results[0].content == FACTS[1]
    client = ReplayChatCompletionClient(["Rust."])
    agent = AssistantAgent("assistant", model_client=client, memory=[memory])
    await agent.run(task="Which coding language do I like best?")
    sent = "\n".join(str(m.content) for m in client.create_calls[0]["messages"])
    assert FACTS[2] in sent
    await memory.close()
