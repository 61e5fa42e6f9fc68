"""recall personalizes by the feedback tool's verdicts (issue #17), through the MCP client."""

from __future__ import annotations

from typing import Any

from mcp.client import Client

FACTS = [
    "The user's daughter is called Maya and she is seven",
    "The user prefers green tea over coffee in the morning",
    "The quarterly report is due on the first Friday of April",
    "The user's car is a blue Volvo station wagon",
    "The user is allergic to peanuts and shellfish",
]
QUERY = "tell me something about the user"


async def _order(t: Any, **kw: Any) -> list[str]:
    out = await t.ok("recall", query=QUERY, k=5, **kw)
    return [m["id"] for m in out["memories"]]


async def test_feedback_reorders_recall_and_personalize_false_does_not(make_server, tools) -> None:
    async with Client(make_server()) as c:
        t = tools(c)
        await t.ok("remember", items=[{"text": text} for text in FACTS])
        plain = await _order(t)
        assert await _order(t, personalize=False) == plain  # no feedback yet: the same search
        liked, disliked = plain[-1], plain[0]
        for _ in range(3):
            await t.ok("feedback", id=liked, relevant=True, query=QUERY)
            await t.ok("feedback", id=disliked, relevant=False, query=QUERY)
        personal = await _order(t)
        assert personal.index(liked) < plain.index(liked)  # the liked memory rose
        assert personal.index(disliked) > plain.index(disliked)  # the disliked one fell
        assert await _order(t, personalize=False) == plain  # off: plain similarity order again
        # another end user's verdicts are theirs: this agent's own recall is unchanged by them
        await t.ok("feedback", id=plain[1], relevant=False, query=QUERY, user="someone-else")
        assert await _order(t) == personal
        assert await _order(t, user="someone-else", personalize=False) == []  # user= also filters
