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
