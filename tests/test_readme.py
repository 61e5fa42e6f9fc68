"""Every ```python block of README.md runs (issue #15: the quick start failed when pasted verbatim).

Convention: the blocks of one section (a ``#``/``##``/``###`` heading) run in order in one namespace,
in a fresh temporary working directory, so a later block may use what an earlier one of its section
defined. The fence's info string may add, after ``python``:

- ``skip <reason>``: never run here, with the reason shown (network, GPU, a running MCP server, ...);
- ``slow``: runs only where slow tests run (the real embedding model, large data).

Other blocks (bash, json, ...) are not executed; json blocks must parse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")


@dataclass(frozen=True)
class Block:
    section: str
    line: int  # README line of the block's first code line
    lang: str
    options: str
    code: str


def _blocks(text: str) -> list[Block]:
    out: list[Block] = []
    section = "(top)"
    lines = text.splitlines()
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
            raise AssertionError(f"README.md:{i + 1}: code fence never closed")
        out.append(Block(section, i + 2, fence[1], fence[2], "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return out


BLOCKS = _blocks(README.read_text(encoding="utf-8"))
PY_SECTIONS: dict[str, list[Block]] = {}
for _b in BLOCKS:
    if _b.lang == "python":
        PY_SECTIONS.setdefault(_b.section, []).append(_b)


def _params() -> list[object]:
    params: list[object] = []
    for section, blocks in PY_SECTIONS.items():
        marks = [pytest.mark.slow] if any(b.options.split()[:1] == ["slow"] for b in blocks) else []
        params.append(pytest.param(section, id=section, marks=marks))
    return params


def test_readme_has_the_blocks_we_expect() -> None:
    # guards the extraction itself: a broken fence or renamed section must not make the test vacuous
    assert "Quick start (the core)" in PY_SECTIONS
    assert any("col.upsert(" in b.code for b in PY_SECTIONS["Quick start (the core)"])
    for b in BLOCKS:
        opt = b.options.split()[:1]
        assert b.lang != "python" or opt in ([], ["skip"], ["slow"]), f"README.md:{b.line - 1}: {b.options!r}"
        if b.lang == "python" and opt == ["skip"]:
            assert b.options.split()[1:], f"README.md:{b.line - 1}: `python skip` needs a reason"


@pytest.mark.parametrize("section", _params())
def test_readme_python_blocks_run(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks write ./embeddix-data and the like
    namespace: dict[str, object] = {"__name__": "__readme__"}
    skipped = []
    for block in PY_SECTIONS[section]:
        words = block.options.split()
        if words[:1] == ["skip"]:
            skipped.append(f"README.md:{block.line - 1}: {' '.join(words[1:])}")
            continue
        # pad so that tracebacks name the README's own line numbers
        code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
        exec(code, namespace)
    if skipped and len(skipped) == len(PY_SECTIONS[section]):
        pytest.skip("; ".join(skipped))


def test_readme_json_blocks_parse() -> None:
    for b in BLOCKS:
        if b.lang == "json":
            try:
                json.loads(b.code)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"README.md:{b.line}: {exc}") from exc
