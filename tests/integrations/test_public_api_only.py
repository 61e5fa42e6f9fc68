"""The adapters use only the core's public API (issue #13).

An adapter that imports a private core module, or reaches into a core object's private state, breaks
whenever the core is refactored, and it is where logic that belongs in the core hides. This test reads every
module under ``integrations/`` with :mod:`ast` (nothing is executed) and fails on:

* an import of an ``embeddix_core`` module other than the public ones in :data:`PUBLIC_MODULES`, in
  particular any module path with a component starting with ``_`` (``__init__`` aside);
* an imported name that its public module does not list in ``__all__`` (which also rules out ``_names``);
* ``importlib.import_module`` / ``__import__`` of such a module given as a string;
* ``obj._name`` on anything but ``self`` / ``cls`` (``col._store``, ``col._cid``,
  ``store._collection._index``) and ``getattr(obj, "_name")``;
* ``self._name`` in a class derived from a core class when the core class defines ``_name``, and overriding
  such a private method: a subclass is no licence to use the base's private state.

The public modules are the two with a curated ``__all__`` that a test in the core asserts: the package
root, where users import everything from (errors, config, types and ``parse_filter`` are all re-exported
there, so ``embeddix_core.errors`` & co. are not needed as a second way in), and ``embeddix_core.embeddings``,
the embedder package the adapters build their embedders on. Widening the list is a decision about the
core's public surface, to be taken there and recorded here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "integrations"
PUBLIC_MODULES = ("embeddix_core", "embeddix_core.embeddings")
CORE = "embeddix_core"


def _sources() -> list[Path]:
    return sorted(INTEGRATIONS.rglob("*.py"))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_core(module: str) -> bool:
    return module == CORE or module.startswith(CORE + ".")


def _module_problem(module: str) -> str | None:
    if any(part.startswith("_") and part != "__init__" for part in module.split(".")):
        return f"imports private core module {module}"
    if module not in PUBLIC_MODULES:
        return f"imports core module {module}; import from one of {PUBLIC_MODULES}"
    return None


def _import_problems(tree: ast.AST) -> list[tuple[int, str]]:
    bad: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_core(alias.name) and (problem := _module_problem(alias.name)):
                    bad.append((node.lineno, problem))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _is_core(node.module):
            if problem := _module_problem(node.module):
                bad.append((node.lineno, problem))
                continue
            public = set(importlib.import_module(node.module).__all__)
            for alias in node.names:
                if alias.name not in public:
                    bad.append((node.lineno, f"imports {alias.name} from {node.module}, not in its __all__"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _is_core(node.args[0].value)
            and (problem := _module_problem(node.args[0].value))
        ):
            bad.append((node.lineno, problem))
    return bad


def _private_access_problems(tree: ast.AST) -> list[tuple[int, str]]:
    bad: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _is_private(node.attr)
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            bad.append((node.lineno, f"reads private attribute .{node.attr} of another object"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            bad.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r}) reaches private state"))
    return bad


def _core_private_names(cls: type) -> set[str]:
    """Private names a core class defines: its methods and class attributes, and ``self._x`` it sets."""
    names = {name for name in vars(cls) if _is_private(name)}
    for node in ast.walk(ast.parse(inspect.getsource(cls))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and _is_private(node.attr)
        ):
            names.add(node.attr)
    return names


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(INTEGRATIONS).with_suffix("").parts).removesuffix(".__init__")


def _subclass_problems(path: Path, tree: ast.AST) -> list[tuple[int, str]]:
    module = importlib.import_module(_module_name(path))
    bad: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(module, node.name, None)
        if not isinstance(cls, type):
            continue
        core_bases = [b for b in cls.__mro__[1:] if _is_core(b.__module__)]
        forbidden = set().union(*(_core_private_names(b) for b in core_bases))
        if not forbidden:
            continue
        for sub in ast.walk(node):
            name = None
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                name = sub.attr
            elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                name = sub.name
            if name in forbidden:
                bad.append((sub.lineno, f"{node.name} uses {name}, private to its core base class"))
    return bad


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(INTEGRATIONS)))
def test_adapter_module_uses_only_the_public_core_api(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    problems = _import_problems(tree) + _private_access_problems(tree) + _subclass_problems(path, tree)
    where = path.relative_to(ROOT)
    assert not problems, "\n".join(f"{where}:{line}: {what}" for line, what in sorted(problems))


def test_the_check_catches_what_issue_13_found() -> None:
    # The three patterns the adapters had before issue #13, so a broken check cannot pass silently.
    tree = ast.parse(
        "from embeddix_core.embeddings._wrapped import WrappedEmbedder\n"
        "from embeddix_core.query.filters import parse_filter\n"
        "import embeddix_core._validate\n"
        "from embeddix_core import _version\n"
        "ids = col._store.delete_where(col._cid, '1', [])\n"
        "getattr(col, '_index')\n"
    )
    lines = sorted(line for line, _ in _import_problems(tree) + _private_access_problems(tree))
    assert lines == [1, 2, 3, 4, 5, 5, 6]


def test_public_modules_curate_their_names() -> None:
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        assert module.__all__ == sorted(module.__all__, key=str)
        assert not [n for n in module.__all__ if _is_private(n)]
