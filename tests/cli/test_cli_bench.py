"""``embeddix bench``: runs ``python -m benchmarks.report --quick`` from a source checkout, else exits 1.

The real report takes minutes, so the checkout here is a stand-in: a directory with ``embeddix_core/`` and
a ``benchmarks/report/__main__.py`` that records the arguments it was given and exits with a chosen status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embeddix_core.cli._bench import find_checkout

FAKE_REPORT = """\
import json, os, sys
from pathlib import Path
Path("argv.json").write_text(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}))
raise SystemExit(int(os.environ.get("FAKE_REPORT_STATUS", "0")))
"""


def embeddix(cwd: Path, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    env["FAKE_REPORT_STATUS"] = str(status)
    return subprocess.run(
        [sys.executable, "-m", "embeddix_core.cli", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "embeddix_core").mkdir(parents=True)
    report = root / "benchmarks" / "report"
    report.mkdir(parents=True)
    (root / "benchmarks" / "__init__.py").write_text("")
    (report / "__init__.py").write_text("")
    (report / "__main__.py").write_text(FAKE_REPORT)
    return root


def test_outside_a_checkout_exits_1_saying_what_is_needed(tmp_path: Path) -> None:
    res = embeddix(tmp_path)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embeddix: error: bench runs the benchmark report")
    assert (
        "source checkout" in lines[0] and str(tmp_path) in lines[0] and "clone of the repository" in lines[0]
    )


def test_in_a_checkout_runs_the_quick_report_there(checkout: Path) -> None:
    below = checkout / "docs" / "deeper"
    below.mkdir(parents=True)
    res = embeddix(below, "--engines", "embeddix,hnswlib")  # found from a directory below the root too
    assert res.returncode == 0, res.stderr
    got = json.loads((checkout / "argv.json").read_text())
    assert got["argv"] == ["--quick", "--engines", "embeddix,hnswlib"]
    assert Path(got["cwd"]) == checkout.resolve()
    assert "-m benchmarks.report --quick --engines embeddix,hnswlib" in res.stderr


def test_full_drops_quick_and_the_report_status_is_the_exit_status(checkout: Path) -> None:
    res = embeddix(checkout, "--full", status=3)
    assert res.returncode == 3
    assert json.loads((checkout / "argv.json").read_text())["argv"] == []


def test_find_checkout(checkout: Path, tmp_path: Path) -> None:
    assert find_checkout(checkout / "benchmarks" / "report") == checkout.resolve()
    assert find_checkout(tmp_path) is None
    (checkout / "embeddix_core").rmdir()  # a benchmarks/ of some other project is not ours
    assert find_checkout(checkout) is None


def test_the_command_imports_no_benchmarks() -> None:
    code = (
        "import sys, embeddix_core.cli._app\n"
        "bad = [m for m in sys.modules if m == 'benchmarks' or m.startswith('benchmarks.')]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
