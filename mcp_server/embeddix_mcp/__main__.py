"""``python -m embeddix_mcp``: the same as the ``embeddix-mcp`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
