"""``embeddix bench``: the benchmark report's quick mode, run from a source checkout.

The report (``benchmarks/report``, issue #19) lives in the repository next to the package, not in the
installed distribution, and the core never imports it (the core imports nothing above itself:
``tests/check_imports.py``). So this command only looks for a checkout - the current directory or one of
its parents holding both ``embeddix_core/`` and ``benchmarks/report/`` - and runs
``python -m benchmarks.report --quick`` there in a child process, with this interpreter; the child's exit
status is the command's. Without a checkout it is a user error (exit 1) that says what is needed.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import click

from ..errors import EmbeddixError

__all__ = ["bench", "find_checkout"]

REPORT = Path("benchmarks") / "report" / "__main__.py"


class NoCheckoutError(EmbeddixError):
    """``embeddix bench`` was run outside a source checkout (the report is not part of the package)."""


def find_checkout(start: Path) -> Path | None:
    """The nearest directory from ``start`` upwards that holds ``embeddix_core/`` and the report.

    Args:
        start: Where to start looking (the command uses the current directory).

    Returns:
        The checkout's root, or None.
    """
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / REPORT).is_file() and (folder / "embeddix_core").is_dir():
            return folder
    return None


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--full", is_flag=True, help="The full report (every data set, every engine; about an hour).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(full: bool, args: tuple[str, ...]) -> int:
    """Run the benchmark report against the peers: python -m benchmarks.report --quick [ARGS].

    Needs a source checkout (run it from the repository or below it): the report and its data sets are
    not installed with the package. ARGS go to the report (e.g. --engines embeddix,hnswlib); see
    python -m benchmarks.report --help and benchmarks/README.md. The peers are the 'bench' extra.
    """
    root = find_checkout(Path.cwd())
    if root is None:
        raise NoCheckoutError(
            f"bench runs the benchmark report (benchmarks/report, issue #19), which is in a source checkout "
            f"of Embeddix, not in the installed package; none in {Path.cwd()} or its parents. Run it from a "
            "clone of the repository (make install; pip install -e '.[all,dev,bench]' for the peers)"
        )
    command = [sys.executable, "-m", "benchmarks.report", *([] if full else ["--quick"]), *args]
    click.echo(f"embeddix bench: {shlex.join(command)}  (in {root})", err=True)
    return subprocess.call(command, cwd=root)
