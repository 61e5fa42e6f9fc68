"""AutoGen integration for Embeddix: a ``Memory`` that recalls by meaning, stored in an Embeddix collection.

Quick start::

    from autogen_core.memory import MemoryContent, MemoryMimeType
    from autogen_embeddix import EmbeddixMemory

    memory = EmbeddixMemory(path="./agent-memory")  # offline MiniLM embeddings by default
    await memory.add(MemoryContent(content="The user lives in Lyon", mime_type=MemoryMimeType.TEXT))
    agent = AssistantAgent("assistant", model_client=client, memory=[memory])

* :class:`EmbeddixMemory`: the memory (``Component``: ``dump_component`` / ``load_component``).
* :class:`EmbeddixMemoryConfig`: its configuration.
"""

from ._memory import EmbeddixMemory, EmbeddixMemoryConfig

__all__ = ["EmbeddixMemory", "EmbeddixMemoryConfig"]
