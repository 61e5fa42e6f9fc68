"""Simple document chunking for ``ingest``: character windows cut at natural boundaries, with overlap."""

from __future__ import annotations

__all__ = ["chunk_text"]

# Boundaries tried in order. Strong ones (a paragraph, a line, a sentence) are searched in the last half of
# a window, weak ones (a clause, a word) only in its last fifth; a window with none of them is cut hard.
_STRONG = ("\n\n", "\n", ". ", "! ", "? ")
_WEAK = ("; ", ", ", " ")


def _cut(text: str, start: int, hi: int, size: int) -> int:
    for seps, lo in ((_STRONG, start + max(1, size // 2)), (_WEAK, start + max(1, size * 4 // 5))):
        best = -1
        for sep in seps:
            at = text.rfind(sep, lo, hi)
            if at != -1:
                best = max(best, at + len(sep))
            if best != -1 and sep in ("\n\n", "\n"):
                break
        if best != -1:
            return best
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
            end = _cut(text, start, end, size)
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
