"""Statements with an ``IN (...)`` list are run for at most ``CHUNK`` values at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["CHUNK", "chunks"]

# SQLite's default limit on host parameters is 32,766; 500 also keeps each statement's text (cached per
# length by the store) small.
CHUNK = 500


def chunks(seq: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``seq`` of at most ``size`` items."""
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
