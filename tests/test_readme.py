"""Every code block of README.md runs (issue #15: the quick start failed when pasted verbatim).

The collector and its conventions (``python skip <reason>``, ``python slow``, ``python requires <path>``,
``bash run``; sections share a namespace) live in ``test_docs.py``, which runs every other doc the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_docs import (
    ROOT,
    blocks_of,
    check_options,
    parse_json_blocks,
    python_sections,
    run_python_section,
    run_shell_blocks,
    section_marks,
)

README = ROOT / "README.md"
BLOCKS = blocks_of(README)
PY_SECTIONS = python_sections(BLOCKS)


def _params() -> list[object]:
    return [pytest.param(s, id=s, marks=section_marks(b)) for s, b in PY_SECTIONS.items()]


def test_readme_has_the_blocks_we_expect() -> None:
    # guards the extraction itself: a broken fence or renamed section must not make the test vacuous
    assert "Quick start (the core)" in PY_SECTIONS
    assert any("col.upsert(" in b.code for b in PY_SECTIONS["Quick start (the core)"])
    check_options(BLOCKS)


@pytest.mark.parametrize("section", _params())
def test_readme_python_blocks_run(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_python_section(PY_SECTIONS[section], tmp_path, monkeypatch)


def test_readme_json_blocks_parse() -> None:
    parse_json_blocks(BLOCKS)


def test_readme_shell_blocks_marked_run_succeed() -> None:
    run_shell_blocks(BLOCKS)
