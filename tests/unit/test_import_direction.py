import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "check_imports", Path(__file__).parents[1] / "check_imports.py"
)
assert _spec and _spec.loader
check_imports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_imports)


def test_core_imports_no_framework_or_adapter() -> None:
    assert check_imports.violations() == []


def test_the_core_has_no_import_cycle() -> None:
    assert check_imports.cycles(check_imports.import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert check_imports.cycles(graph) == [["a", "b", "c"]]


def test_the_old_collection_database_cycle_would_be_found() -> None:
    # collection.py used to import database.py (for a type) while database.py imported collection.py
    graph = check_imports.import_graph()
    graph["embeddix_core.collection"] = graph["embeddix_core.collection"] | {"embeddix_core.database"}
    assert ["embeddix_core.collection", "embeddix_core.database"] in check_imports.cycles(graph)
