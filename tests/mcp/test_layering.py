"""The memory domain imports no protocol or web code, so it can serve any front end (and be tested alone).

The domain modules are parsed, not imported, and every module of the package they import is followed, so
an MCP import that sneaks in through a helper module fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mcp_server" / "embeddix_mcp"
DOMAIN = ("memory", "documents", "search")
FORBIDDEN = frozenset({"mcp", "mcp_types", "starlette", "uvicorn"})


def _imports(module: str, package: Path) -> tuple[set[str], set[str]]:
    """(top-level names of outside imports, package modules imported) of ``embeddix_mcp.<module>``."""
    tree = ast.parse((package / f"{module}.py").read_text(), filename=f"{module}.py")
    outside: set[str] = set()
    inside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                outside.add(node.module.split(".")[0])
            elif node.module:  # from .x import y
                inside.add(node.module.split(".")[0])
            else:  # from . import x
                inside.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            outside.add(node.args[0].value.split(".")[0])
    return outside, inside


def _closure(module: str, package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every package module reachable from ``module`` by imports, with its outside imports."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        outside, inside = _imports(name, package)
        seen[name] = outside
        todo.extend(inside - seen.keys())
    return seen


@pytest.mark.parametrize("module", DOMAIN)
def test_domain_imports_no_protocol_code(module: str) -> None:
    reached = _closure(module)
    bad = {name: sorted(outside & FORBIDDEN) for name, outside in reached.items() if outside & FORBIDDEN}
    assert not bad, f"embeddix_mcp.{module} reaches MCP/web imports through {bad}"
    assert "tools" not in reached and "server" not in reached


def test_the_check_sees_an_mcp_import(tmp_path: Path) -> None:
    # The guard itself: a module that imports MCP code directly or through a helper is caught.
    (tmp_path / "helper.py").write_text("from mcp.server.mcpserver import Context\n")
    (tmp_path / "domain.py").write_text("from . import helper\nimport json\n")
    reached = _closure("domain", tmp_path)
    assert reached["helper"] & FORBIDDEN == {"mcp"} and not reached["domain"] & FORBIDDEN
