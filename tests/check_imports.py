"""Import-direction check: the core imports no framework and no adapter; adapters don't import the server.

Run as a script (``make lint``) and as a test (tests/unit/test_import_direction.py).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = (
    "langchain",
    "langchain_core",
    "llama_index",
    "autogen",
    "autogen_core",
    "autogen_agentchat",
    "autogen_ext",
    "mcp",
    "starlette",
    "uvicorn",
)
OURS_ABOVE_CORE = ("langchain_embeddix", "autogen_embeddix", "embeddix_mcp")

RULES: dict[str, tuple[str, ...]] = {
    "embeddix_core": FRAMEWORKS + OURS_ABOVE_CORE,
    "integrations": ("embeddix_mcp", "mcp"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations() -> list[str]:
    bad: list[str] = []
    for folder, forbidden in RULES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for lineno, mod in imported_modules(path):
                top = mod.split(".")[0]
                if top in forbidden or any(mod == f or mod.startswith(f + ".") for f in forbidden):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {folder} must not import {mod}")
    return bad


if __name__ == "__main__":
    problems = violations()
    for p in problems:
        print(p)
    print(f"import direction: {len(problems)} violation(s)")
    sys.exit(1 if problems else 0)
