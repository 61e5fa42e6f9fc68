"""Text utilities shared by the MCP server and the command line (pure Python, no framework)."""

from .chunking import chunk_text

__all__ = ["chunk_text"]
