"""The layout rules of docs/architecture.md, checked on the source: module and function
sizes, small modules are leaves, the model package is self-contained, and the library
imports neither the tools nor the benchmarks."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "detr_irpe").rglob("*.py"), *(ROOT / "tools").glob("*.py"),
                  *(ROOT / "benchmarks").glob("*.py"), ROOT / "main.py"])
MAX_MODULE_LINES, MAX_FUNCTION_LINES, SMALL_MODULE_LINES = 400, 80, 40


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_module_and_function_sizes(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{_name(path)}: split it by concept"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{_name(path)}:{node.lineno} {node.name}: {lines} lines"


@pytest.mark.parametrize("path", [p for p in SOURCES if p.parts[-2] != "tools"
                                  and p.name not in ("__init__.py", "main.py")
                                  and p.read_text().count("\n") < SMALL_MODULE_LINES], ids=_name)
def test_a_small_module_is_a_leaf(path):
    """A module under 40 lines imports nothing of the project: otherwise it belongs in its
    neighbour."""
    ours = {m for m in imported_modules(path) if m.split(".")[0] in ("detr_irpe", "benchmarks")}
    assert not ours, f"{_name(path)} is small and imports {sorted(ours)}"


def test_the_model_package_is_self_contained():
    for path in (ROOT / "detr_irpe" / "models").rglob("*.py"):
        outside = {m for m in imported_modules(path)
                   if m.startswith("detr_irpe") and not m.startswith("detr_irpe.models")}
        assert not outside, f"{_name(path)} imports {sorted(outside)}"


def test_the_library_imports_neither_tools_nor_benchmarks():
    for path in [*(ROOT / "detr_irpe").rglob("*.py"), *(ROOT / "tools").glob("*.py"),
                 ROOT / "main.py"]:
        tops = {m.split(".")[0] for m in imported_modules(path)}
        assert not tops & {"benchmarks"}, _name(path)
        if path.parts[-2] != "tools":
            assert "tools" not in tops, _name(path)


def test_relative_imports_resolve_as_python_does():
    """The helper above, on the one package that imports relatively."""
    assert "detr_irpe.models.irpe_config" in imported_modules(
        ROOT / "detr_irpe" / "models" / "config.py")
