"""An AutoGen assistant with long-term memory in Embeddix, fully offline.

The memory holds a few facts about the user; before the model is called, the agent recalls the ones
relevant to the task and adds them to the model context. The model is AutoGen's
``ReplayChatCompletionClient`` (canned answers, no network), so the script prints what the model *was
given*: the recalled memories.

    python examples/autogen_memory.py "Plan a dinner for me: which foods must I avoid?"
    python examples/autogen_memory.py --embedder hash "Which city do I live in?"
"""

from __future__ import annotations

import argparse
import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import MemoryQueryEvent
from autogen_core.memory import MemoryContent, MemoryMimeType
from autogen_core.models import SystemMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from autogen_embeddix import EmbeddixMemory

FACTS = [
    ("The user lives in Lyon, France.", "profile"),
    ("The user is vegetarian and allergic to peanuts.", "diet"),
    ("The user prefers answers in metric units.", "preferences"),
    ("The user's favourite programming language is Rust.", "preferences"),
]


async def run(question: str, embedder: str, path: str | None, k: int) -> None:
    memory = EmbeddixMemory(path=path, k=k, embedder=embedder)
    try:
        await memory.clear()
        for fact, topic in FACTS:
            await memory.add(
                MemoryContent(content=fact, mime_type=MemoryMimeType.TEXT, metadata={"topic": topic})
            )
        await memory.add(
            MemoryContent(
                content={"city": "Lyon", "country": "France"},
                mime_type=MemoryMimeType.JSON,
                metadata={"topic": "profile"},
            )
        )
        client = ReplayChatCompletionClient(["(a canned answer: the replay client does not read the prompt)"])
        agent = AssistantAgent("assistant", model_client=client, memory=[memory])
        result = await agent.run(task=question)
        print(f"question: {question}")
        for message in result.messages:
            if isinstance(message, MemoryQueryEvent):
                for i, item in enumerate(message.content, 1):
                    meta = item.metadata or {}
                    score = meta.get("score", 0.0)
                    print(f"recalled {i}: {item.content!s} (topic {meta.get('topic')}, score {score:.2f})")
        sent = client.create_calls[0]["messages"]
        memory_message = next(
            m for m in sent if isinstance(m, SystemMessage) and "Relevant memory" in m.content
        )
        print("the model was given:" + memory_message.content.replace("\n", "\n  "))
        print(f"reply: {result.messages[-1].to_text()}")
        print(f"memory config: {memory.dump_component().config}")
    finally:
        await memory.close()


def main(argv: list[str] | None = None) -> None:
    """Fill the memory, run the agent once, and print what it recalled."""
    parser = argparse.ArgumentParser(description="An AutoGen assistant with Embeddix memory, offline.")
    parser.add_argument("question", nargs="?", default="Plan a dinner for me: which foods must I avoid?")
    parser.add_argument(
        "--embedder",
        choices=["hash", "minilm"],
        default="minilm",
        help="minilm: the offline default model; hash: fast, word-overlap only",
    )
    parser.add_argument("--path", default=None, help="keep the memory in this directory (default: in memory)")
    parser.add_argument("--k", type=int, default=2, help="memories recalled per turn")
    args = parser.parse_args(argv)
    asyncio.run(run(args.question, args.embedder, args.path, args.k))


if __name__ == "__main__":
    main()
