"""The chunker, kept importable here for the server's modules and tests; it lives in the core
(``embeddix_core/text/chunking.py``) so the ``embeddix`` command line uses the same one."""

from __future__ import annotations

from embeddix_core.text.chunking import chunk_text

__all__ = ["chunk_text"]
