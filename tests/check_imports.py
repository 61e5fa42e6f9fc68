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
    "ray",
)
OURS_ABOVE_CORE = ("langchain_embeddix", "autogen_embeddix", "embeddix_ray", "embeddix_mcp")

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


def _module_names(package: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(package: str = "embeddix_core") -> dict[str, set[str]]:
    """Module -> the package's modules it imports at module level (``TYPE_CHECKING`` blocks excluded)."""
    modules = _module_names(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # annotations only: never executed, no cycle at run time
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom):
                    base = here.split(".")[: len(here.split(".")) - (sub.level - 1)] if sub.level else []
                    target = ".".join(base + ([sub.module] if sub.module else []))
                    for alias in sub.names:
                        # "from . import persist" imports a submodule, not the package's __init__
                        dep = f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                        if dep in modules and dep != name:
                            graph[name].add(dep)
                elif isinstance(sub, ast.Import):
                    graph[name].update(a.name for a in sub.names if a.name in modules and a.name != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


if __name__ == "__main__":
    problems = violations() + [f"import cycle: {' <-> '.join(c)}" for c in cycles(import_graph())]
    for p in problems:
        print(p)
    print(f"import direction: {len(problems)} violation(s)")
    sys.exit(1 if problems else 0)
