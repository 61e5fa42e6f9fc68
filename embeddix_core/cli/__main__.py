"""``python -m embeddix_core.cli``: the same as the ``embeddix`` command."""

from __future__ import annotations

from . import main

raise SystemExit(main())
