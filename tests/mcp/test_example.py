"""The demo script (what ``make run`` runs) works end to end; the hash embedder keeps it fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp_demo.py"


@pytest.mark.slow
def test_mcp_demo_runs_twice_without_duplicating(tmp_path: Path, server_env) -> None:
    cmd = [sys.executable, str(EXAMPLE), "--data", str(tmp_path / "data"), "--embedder", "hash"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=server_env(), check=False)
    assert first.returncode == 0, first.stderr
    assert "remember: 6 memories (0 already known, updated)" in first.stdout
    assert "pass 1/" in first.stdout and "marked relevant" in first.stdout
    assert "Ana is learning Japanese" in first.stdout  # the hybrid query finds it even by hashing
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=server_env(), check=False)
    assert second.returncode == 0, second.stderr
    assert "(6 already known, updated)" in second.stdout and "has 6 memories" in second.stdout
