"""The package's layering, read from its import graph: entry points on top, models below
evaluation, nothing importing an entry point (see the docstring of `cifar_lab/__init__.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_lab"
ENTRY_POINTS = {"train", "predict", "bench", "report", "show_augment", "corrupt"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every `cifar_lab...` module that `path` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "cifar_lab"}


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_the_graph_covers_the_package() -> None:
    assert {"cifar_lab.train", "cifar_lab.models.classifier", "cifar_lab.build"} <= GRAPH.keys()
    assert "cifar_lab.build" in GRAPH["cifar_lab.train"]


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_no_module_imports_an_entry_point(entry_point: str) -> None:
    target = f"cifar_lab.{entry_point}"
    importers = sorted(
        module
        for module, imported in GRAPH.items()
        if any(name == target or name.startswith(f"{target}.") for name in imported)
    )
    assert importers == [], f"{target} is imported by {importers}"


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("cifar_lab.models", "cifar_lab.evaluation"),
        ("cifar_lab.models", "cifar_lab.training"),
        ("cifar_lab.data", "cifar_lab.models"),
        ("cifar_lab.data", "cifar_lab.evaluation"),
        ("cifar_lab.data", "cifar_lab.training"),
        ("cifar_lab.evaluation", "cifar_lab.training"),
        ("cifar_lab.training", "cifar_lab.evaluation"),
        ("cifar_lab.models", "cifar_lab.build"),
        ("cifar_lab.data", "cifar_lab.build"),
    ],
)
def test_a_lower_layer_never_imports_a_higher_one(lower: str, upper: str) -> None:
    offenders = {
        module: sorted(name for name in imported if name.startswith(f"{upper}"))
        for module, imported in GRAPH.items()
        if module.startswith(lower)
    }
    assert {m: names for m, names in offenders.items() if names} == {}



BASE = {"cifar_lab", "cifar_lab.checkpoint", "cifar_lab.utils", "cifar_lab.speed"}
BASE |= {"cifar_lab.cli", "cifar_lab.errors"}


def imported_modules(module: str) -> set[str]:
    """The modules `module` imports (an imported name counts as its module)."""
    return {name if name in GRAPH else name.rsplit(".", 1)[0] for name in GRAPH[module]}


@pytest.mark.parametrize("module", sorted(BASE))
def test_base_modules_import_only_each_other(module: str) -> None:
    assert imported_modules(module) <= BASE
