"""The ``embeddix`` command: ingest, search, ls, stats, export/import, backup/restore, serve, bench.

Run ``embeddix --help`` (or ``python -m embeddix_core.cli --help``) for the commands; each has ``--help``.
Exit codes: 0 success, 1 a user error (one line on stderr), 2 a usage error, 130 interrupted.

Why Click and not Typer: Click is what Typer is built on, so Typer would be Click plus two more
dependencies (rich, shellingham) for the same parser; our commands are few and their options are plain, so
Typer's type-hint sugar saves little, while Click's explicit decorators keep every option's help, default
and environment variable in one visible place (and ``embeddix-mcp`` already documents its options the same
explicit way). Click was also already in the environment (uvicorn, used by the MCP server, depends on it).
Why tqdm for the progress bar: it shows records/s and the ETA by default, writes to stderr, hides itself
when stderr is not a terminal, and has no dependencies of its own (rich pulls pygments and markdown-it-py).

Both are the ``cli`` extra (``pip install 'embeddix[cli]'``): the engine never imports them, and this
module imports them only when the command runs, so ``import embeddix_core`` stays as light as before.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``embeddix`` command line.

    Args:
        argv: The arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 success, 1 user error, 2 usage error, 130 interrupted.
    """
    try:
        import click  # noqa: F401  (checked here so the error can name the extra)
        import tqdm  # noqa: F401
    except ImportError as exc:
        print(
            f"embeddix: error: the command line needs the 'cli' extra ({exc}); "
            "install it with: pip install 'embeddix[cli]'",
            file=sys.stderr,
        )
        return 1
    from ._app import run

    return run(argv)
