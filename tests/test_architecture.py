"""The package's layering, read from its import graph: entry points on top, models below
evaluation, nothing importing an entry point (see the docstring of `cifar_lab/__init__.py`)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_lab"
ENTRY_POINTS = {"train", "predict", "bench", "report", "show_augment", "corrupt", "study"}


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
        ("cifar_lab.corruptions", "cifar_lab.models"),
        ("cifar_lab.corruptions", "cifar_lab.evaluation"),
        ("cifar_lab.corruptions", "cifar_lab.training"),
        ("cifar_lab.runs", "cifar_lab.data"),
        ("cifar_lab.runs", "cifar_lab.models"),
        ("cifar_lab.runs", "cifar_lab.training"),
        ("cifar_lab.runs", "cifar_lab.evaluation"),
        ("cifar_lab.runs", "cifar_lab.build"),
        ("cifar_lab.runs", "cifar_lab.cli"),
        ("cifar_lab.training", "cifar_lab.cli"),
        ("cifar_lab.attacks", "cifar_lab.models"),
        ("cifar_lab.attacks", "cifar_lab.evaluation"),
        ("cifar_lab.attacks", "cifar_lab.training"),
        ("cifar_lab.attacks", "cifar_lab.build"),
        ("cifar_lab.data", "cifar_lab.attacks"),
        ("cifar_lab.runs", "cifar_lab.attacks"),
    ],
)
def test_a_lower_layer_never_imports_a_higher_one(lower: str, upper: str) -> None:
    offenders = {
        module: sorted(name for name in imported if name.startswith(f"{upper}"))
        for module, imported in GRAPH.items()
        if module.startswith(lower)
    }
    assert {m: names for m, names in offenders.items() if names} == {}


BASE = {"cifar_lab", "cifar_lab.files", "cifar_lab.memory", "cifar_lab.speed", "cifar_lab.clock"}
BASE |= {"cifar_lab.cli", "cifar_lab.errors"}
RUNS = {module for module in GRAPH if module.startswith("cifar_lab.runs")}


def imported_modules(module: str) -> set[str]:
    """The modules `module` imports (an imported name counts as its module)."""
    return {name if name in GRAPH else name.rsplit(".", 1)[0] for name in GRAPH[module]}


@pytest.mark.parametrize("module", sorted(BASE))
def test_base_modules_import_only_each_other(module: str) -> None:
    assert imported_modules(module) <= BASE


@pytest.mark.parametrize("module", sorted(RUNS))
def test_the_run_package_imports_only_the_base_and_itself(module: str) -> None:
    assert imported_modules(module) <= BASE | RUNS


# --- one home per concept -------------------------------------------------------------------
SOURCES = {module_name(path): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}


def modules_where(found: Callable[[ast.AST], bool]) -> list[str]:
    return sorted(module for module, tree in SOURCES.items() if any(map(found, ast.walk(tree))))


def is_literal(text: str) -> Callable[[ast.AST], bool]:
    return lambda node: isinstance(node, ast.Constant) and node.value == text


def is_torch_load(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "load"
        and isinstance(node.value, ast.Name)
        and node.value.id == "torch"
    )


def assigns(name: str) -> Callable[[ast.AST], bool]:
    def found(node: ast.AST) -> bool:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        return isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
            isinstance(t, ast.Name) and t.id == name for t in targets
        )

    return found


def test_checkpoints_are_loaded_in_one_module() -> None:
    assert modules_where(is_torch_load) == ["cifar_lab.runs.checkpoint"]


def test_the_last_checkpoint_is_named_in_one_module() -> None:
    assert modules_where(is_literal("last.ckpt")) == ["cifar_lab.runs.checkpoint"]


def test_the_run_record_is_named_in_one_module() -> None:
    assert modules_where(is_literal("metrics.json")) == ["cifar_lab.runs.record"]


def test_no_module_outside_the_run_package_writes_the_run_record() -> None:
    """Its file name lives in `runs.record`; no other package imports the name to write it."""
    importers = [
        module
        for module, imported in GRAPH.items()
        if "cifar_lab.runs.record.METRICS_FILE" in imported and module not in RUNS
    ]
    assert importers == []


def test_the_severities_are_defined_once() -> None:
    assert len(modules_where(assigns("SEVERITIES"))) == 1


def test_the_checks_see_a_second_definition() -> None:
    """The checks above would fail on a module that repeats what they look for."""
    tree = ast.parse("import torch\nSEVERITIES = (1, 2)\ntorch.load('x', weights_only=True)")
    assert any(map(assigns("SEVERITIES"), ast.walk(tree)))
    assert any(map(is_torch_load, ast.walk(tree)))
