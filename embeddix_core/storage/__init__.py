"""The durable store (SQLite), index snapshots, the lock between processes, and atomic file replacement.

``atomic_write_bytes`` is public: every file Embeddix (and its MCP server) replaces goes through it.
"""

from ._atomic import atomic_write_bytes

__all__ = ["atomic_write_bytes"]
