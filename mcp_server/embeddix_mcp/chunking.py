"""Simple document chunking for ``ingest``: character windows cut at natural boundaries, with overlap."""

from __future__ import annotations

__all__ = ["chunk_text"]

# Boundaries tried in order, each searched in the last fifth of a window: a paragraph, a line, a sentence,
# a word. A window with none of them is cut hard at its size.
_BOUNDARIES = ("\n\n", "\n", ". ", "! ", "? ", "; ", ", ", " ")


def _cut(text: str, lo: int, hi: int) -> int:
    for sep in _BOUNDARIES:
        at = text.rfind(sep, lo, hi)
        if at != -1:
            return at + len(sep)
    return hi


def chunk_text(text: str, size: int, overlap: int) -> list[tuple[int, str]]:
    """Split ``text`` into chunks of at most ``size`` characters; neighbours share about ``overlap``.

    Args:
        text: The document.
        size: Largest chunk, in characters (> 0).
        overlap: Characters repeated from the end of one chunk at the start of the next (0 <= overlap < size).

    Returns:
        ``(start offset, chunk text)`` pairs in document order; empty for a blank document.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need size > 0 and 0 <= overlap < size; got size={size}, overlap={overlap}")
    n = len(text)
    out: list[tuple[int, str]] = []
    start = 0
    while start < n:
        end = min(start + size, n)
        if end < n:
            end = _cut(text, start + max(1, size * 4 // 5), end)
        piece = text[start:end].strip()
        if piece:
            out.append((start, piece))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        if overlap and not text[nxt - 1].isspace():
            # Start the overlap on a word, not mid-word.
            space = text.find(" ", nxt, end)
            if space != -1:
                nxt = space + 1
        start = nxt
    return out
