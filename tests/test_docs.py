"""Every code block of every doc in the repository runs (issue #15: documented paths must work verbatim).

This module holds the collector, shared with ``test_readme.py`` (which runs README.md); the tests here run
every other Markdown file of the repository (found by walking it, skipping hidden, generated and data
directories). Conventions, the same in every doc:

- The ``python`` blocks of one section (a ``#``/``##``/``###`` heading) run in order in one namespace, in a
  fresh temporary working directory, so a later block may use what an earlier one of its section defined.
  The fence's info string may add, after ``python``:

  - ``skip <reason>``: never run here, with the reason shown (network, GPU, a running MCP server, ...);
  - ``slow``: runs only where slow tests run (the real embedding model, large data);
  - ``requires <path>``: runs only when ``<path>`` (relative to the repository root) exists, e.g. the
    git-ignored ``benchmarks/data`` sets that take an hour to build; otherwise the section is skipped.

- ``bash`` / ``sh`` / ``console`` blocks are shown, not run, unless the info string says ``run``: then the
  block runs with ``bash -e`` from the repository root, with ``.venv/bin`` first on ``PATH``, and must exit
  0 within a minute. Only cheap, offline commands that write nothing get ``run`` (``--help``, ``--version``).
- ``json`` blocks must parse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")
_SHELLS = ("bash", "sh", "shell", "console")
# Directories whose Markdown is not documentation a user follows: environments, caches, built data.
_PRUNE = {"node_modules", "__pycache__", "build", "dist", "data"}
_PYTHON_OPTIONS = ("skip", "slow", "requires")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    doc: Path
    section: str
    line: int  # line of the block's first code line in ``doc``
    lang: str
    options: str
    code: str

    @property
    def where(self) -> str:
        """``path:line`` of the opening fence, for messages."""
        return f"{self.doc.relative_to(ROOT)}:{self.line - 1}"


def blocks_of(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc`` (top-level fences only), with the section each one is in."""
    out: list[Block] = []
    section = "(top)"
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{doc.relative_to(ROOT)}:{i + 1}: code fence never closed")
        out.append(Block(doc, section, i + 2, fence[1], fence[2], "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return out


def python_sections(blocks: list[Block]) -> dict[str, list[Block]]:
    """The python blocks, grouped by section in document order."""
    sections: dict[str, list[Block]] = {}
    for b in blocks:
        if b.lang == "python":
            sections.setdefault(b.section, []).append(b)
    return sections


def check_options(blocks: list[Block]) -> None:
    """Fail on an info string the runner would not understand (a typo must not silently skip a block)."""
    for b in blocks:
        words = b.options.split()
        if b.lang == "python":
            assert words[:1] == [] or words[0] in _PYTHON_OPTIONS, f"{b.where}: {b.options!r}"
            if words[:1] in (["skip"], ["requires"]):
                assert words[1:], f"{b.where}: `python {words[0]}` needs a reason or a path"
        elif b.lang in _SHELLS:
            assert words in ([], ["run"]), f"{b.where}: {b.options!r}"


def section_marks(blocks: list[Block]) -> list[pytest.MarkDecorator]:
    """``slow`` when any block of the section says so."""
    return [pytest.mark.slow] if any(b.options.split()[:1] == ["slow"] for b in blocks) else []


def run_python_section(blocks: list[Block], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one section's python blocks in one namespace, from ``tmp_path``; skip as their options say."""
    monkeypatch.chdir(tmp_path)  # blocks write ./embeddix-data and the like
    monkeypatch.syspath_prepend(str(ROOT))  # blocks import benchmarks.* as a reader at the root would
    namespace: dict[str, object] = {"__name__": "__doc_block__"}
    skipped = []
    for block in blocks:
        words = block.options.split()
        if words[:1] == ["skip"]:
            skipped.append(f"{block.where}: {' '.join(words[1:])}")
            continue
        missing = [p for p in words[1:] if words[:1] == ["requires"] and not (ROOT / p).exists()]
        if missing:
            pytest.skip(f"{block.where}: needs {', '.join(missing)} (not built on this machine)")
        # pad so that tracebacks name the doc's own line numbers
        code = compile("\n" * (block.line - 1) + block.code, str(block.doc), "exec")
        exec(code, namespace)
    if skipped and len(skipped) == len(blocks):
        pytest.skip("; ".join(skipped))


def run_shell_blocks(blocks: list[Block]) -> int:
    """Run the ``run`` shell blocks; return how many ran."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    ran = 0
    for b in blocks:
        if b.lang not in _SHELLS or b.options.split() != ["run"]:
            continue
        proc = subprocess.run(
            ["bash", "-e", "-c", b.code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{b.where}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        ran += 1
    return ran


def parse_json_blocks(blocks: list[Block]) -> None:
    """Every ``json`` block parses."""
    for b in blocks:
        if b.lang == "json":
            try:
                json.loads(b.code)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{b.where}: {exc}") from exc


def markdown_files() -> list[Path]:
    """The repository's Markdown files other than README.md (``test_readme.py`` runs that one)."""
    found: list[Path] = []
    for here, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _PRUNE and "egg-info" not in d)
        found += [Path(here) / f for f in sorted(files) if f.endswith(".md")]
    return [p for p in found if p != ROOT / "README.md"]


DOCS = {str(p.relative_to(ROOT)): blocks_of(p) for p in markdown_files()}


def _section_params() -> list[object]:
    params: list[object] = []
    for name, blocks in DOCS.items():
        for section, in_section in python_sections(blocks).items():
            params.append(
                pytest.param(name, section, id=f"{name}::{section}", marks=section_marks(in_section))
            )
    return params


def test_the_docs_are_found_and_well_formed() -> None:
    # guards the walk itself: a pruning mistake must not make the tests below vacuous
    assert "benchmarks/README.md" in DOCS and "tests/compat/README.md" in DOCS
    assert python_sections(DOCS["benchmarks/README.md"])
    for blocks in DOCS.values():
        check_options(blocks)


@pytest.mark.parametrize(("doc", "section"), _section_params())
def test_doc_python_blocks_run(
    doc: str, section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_python_section(python_sections(DOCS[doc])[section], tmp_path, monkeypatch)


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_doc_shell_and_json_blocks(doc: str) -> None:
    parse_json_blocks(DOCS[doc])
    run_shell_blocks(DOCS[doc])
