"""embeddix_mcp.cli: ``--version``, and the two ways to start the command (issue #15)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from embeddix_mcp.cli import main

VERSION = importlib.metadata.version("embeddix")


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"embeddix-mcp {VERSION}"


def _console_script() -> str | None:
    # The installed command sits next to the interpreter in a venv; else wherever PATH has it.
    beside = Path(sys.executable).with_name("embeddix-mcp")
    return str(beside) if beside.exists() else shutil.which("embeddix-mcp")


@pytest.mark.parametrize("how", ["python -m embeddix_mcp", "embeddix-mcp"])
def test_version_from_the_command_line(how: str, server_env: Callable[..., dict[str, str]]) -> None:
    if how == "embeddix-mcp":
        script = _console_script()
        if script is None:
            pytest.skip("the embeddix-mcp command is not installed (pip install -e '.[mcp]')")
        command = [script]
    else:
        command = [sys.executable, "-m", "embeddix_mcp"]
    out = subprocess.run(
        [*command, "--version"], env=server_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"embeddix-mcp {VERSION}"


def test_python_m_runs_the_same_parser(server_env: Callable[..., dict[str, str]]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "embeddix_mcp", "--help"],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "--version" in out.stdout and "--data" in out.stdout
