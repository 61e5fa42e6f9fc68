"""The official MCP Inspector CLI drives the server over stdio (skipped when the inspector is not installed).

Install it outside the repository and point ``MCP_INSPECTOR_BIN`` at it, e.g.::

    npm install --prefix /tmp/mcp-inspector @modelcontextprotocol/inspector
    MCP_INSPECTOR_BIN=/tmp/mcp-inspector/node_modules/.bin/mcp-inspector pytest tests/mcp/test_inspector.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

INSPECTOR = os.environ.get("MCP_INSPECTOR_BIN") or shutil.which("mcp-inspector")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        INSPECTOR is None or shutil.which("node") is None,
        reason="MCP Inspector not installed (set MCP_INSPECTOR_BIN)",
    ),
]


def _inspect(data: Path, env: dict[str, str], *args: str, returncode: int = 0) -> Any:
    return _run_inspector(data, env, *args, returncode=returncode)[0]


def _run_inspector(data: Path, env: dict[str, str], *args: str, returncode: int = 0) -> tuple[Any, str]:
    assert INSPECTOR is not None
    cmd = [
        INSPECTOR,
        "--cli",
        "-e",
        f"PYTHONPATH={env['PYTHONPATH']}",
        sys.executable,
        "-m",
        "embeddix_mcp",
        "--data",
        str(data),
        "--agent",
        "inspector",
        "--embedder",
        "hash",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert out.returncode == returncode, out.stderr
    return json.loads(out.stdout), out.stderr


def test_inspector_lists_and_calls_tools(tmp_path: Path, server_env) -> None:
    data = tmp_path / "data"
    env = server_env()
    listed, stderr = _run_inspector(data, env, "--method", "tools/list", "--strict")
    # --strict exits non-zero on error-severity findings only; portability warnings (e.g. a "type" array
    # for a nullable field) are printed to stderr, one "Warning: tool ..." block each, plus a summary line.
    findings = [line for line in stderr.splitlines() if line.startswith(("Warning:", "Error:"))]
    assert findings == [] and "warnings across" not in stderr, stderr
    names = {t["name"] for t in listed["tools"]}
    assert {"remember", "recall", "stream", "forget", "feedback", "ingest"} <= names
    assert all("outputSchema" in t for t in listed["tools"])
    stored = _inspect(
        data,
        env,
        "--method",
        "tools/call",
        "--tool-name",
        "remember",
        "--tool-arg",
        "text=The inspector was here",
        'metadata={"tags": ["cli"]}',
    )
    assert stored["isError"] is False and len(stored["structuredContent"]["ids"]) == 1
    got = _inspect(
        data,
        env,
        "--method",
        "tools/call",
        "--tool-name",
        "recall",
        "--tool-arg",
        "query=The inspector was here",
        "k=3",
    )
    best = got["structuredContent"]["memories"][0]
    assert (
        best["id"] == stored["structuredContent"]["ids"][0] and best["score"] == 1 and best["tags"] == ["cli"]
    )
    bad = _inspect(
        data,
        env,
        "--method",
        "tools/call",
        "--tool-name",
        "recall",
        "--tool-arg",
        "query=x",
        "k=0",
        returncode=5,
    )  # the inspector's exit status for a tool result with isError
    assert bad["isError"] is True and "greater than or equal to 1" in bad["content"][0]["text"]
