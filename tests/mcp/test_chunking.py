"""Chunking for ingest."""

from __future__ import annotations

from itertools import pairwise

import pytest

from embeddix_mcp.chunking import chunk_text


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("  hello world  ", 100, 10) == [(0, "hello world")]
    assert chunk_text("   ", 100, 10) == []


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (100, 20), (250, 60), (1000, 100)])
def test_chunks_cover_the_text_within_size_and_cut_at_boundaries(size: int, overlap: int) -> None:
    text = " ".join(f"Sentence number {i} says something about topic {i % 7}." for i in range(200))
    chunks = chunk_text(text, size, overlap)
    assert all(len(c) <= size for _, c in chunks)
    starts = [s for s, _ in chunks]
    assert starts == sorted(starts) and starts[0] == 0
    for (s, c), (s2, _) in pairwise(chunks):
        assert s2 <= s + len(c) + 1  # no gap between consecutive chunks
        if overlap:
            assert s2 < s + len(c)  # and they overlap
    assert chunks[-1][1].endswith("topic 3.")
    assert all(text[s + len(c)] == " " for s, c in chunks[:-1])  # cut between words, never inside one


def test_text_without_boundaries_is_cut_hard() -> None:
    chunks = chunk_text("x" * 1000, 300, 50)
    assert [len(c) for _, c in chunks] == [300, 300, 300, 250]


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("abc", 10, 10)
