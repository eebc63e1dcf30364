"""The import rules of ARCHITECTURE.md, enforced on every module of the project.

Floors, bottom to top: the core library (``pneumo/*.py``), monitoring's features, tasks and
serving side by side, flows, and the CLI on top. A module imports from its own floor or below,
never from above; a task never imports another task; serving never imports tasks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import package_folders

ROOT = Path(__file__).resolve().parents[1]

# What each floor may import from the project (besides itself, where listed).
ALLOWED = {
    "core": {"core"},
    "monitoring": {"core", "monitoring"},
    "tasks": {"core", "monitoring"},  # not "tasks": a task never imports another task
    "serving": {"core", "monitoring", "serving"},
    "flows": {"core", "monitoring", "tasks", "flows"},  # a flow may run another as its subflow
    "cli": {"core", "monitoring", "tasks", "flows", "cli"},  # the service runs as a process of its own
    "benchmarks": {"core", "monitoring", "tasks", "flows", "serving"},
}
# Imports allowed inside functions, and why (see ARCHITECTURE.md): everything else goes at the top.
LAZY = {
    "core": set(),
    "monitoring": {"keras"},  # the ONNX serving path never loads TensorFlow
    "tasks": set(),
    # likewise: TensorFlow only when needed, and mlflow (pneumo.models) only for versions without a
    # graph; the worker reads the registry through pneumo.registry
    "serving": {"tensorflow", "pneumo.serving.gradcam", "pneumo.models"},
    "flows": set(),
    # Prefect reads its settings when first imported: only after apply_client_env(). TensorFlow:
    # only in the commands that need it, so `pneumo --help` stays fast.
    "cli": {"pneumo.flows", "pneumo.tasks", "pneumo.orchestration", "pneumo.assessment"},
}


def modules() -> dict[str, Path]:
    """Every module of the project by its import name, plus the benchmarks by file name."""
    found = {}
    for package, folder in package_folders().items():
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    found.update({f"benchmarks.{path.stem}": path for path in (ROOT / "benchmarks").glob("*.py")})
    return found


def floor(module: str) -> str:
    for name in ("cli", "flows", "tasks", "serving", "monitoring"):
        if module == f"pneumo.{name}" or module.startswith(f"pneumo.{name}."):
            return name
    return "benchmarks" if module.startswith("benchmarks.") else "core"


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(imported module, inside a function, line)`` for every import of the project's code."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n for n in submodules if n in MODULES] or [node.module]  # from package import module
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, id(node) not in top, node.lineno) for name in names]
    return found


MODULES = modules()


def test_the_project_is_one_namespace_whatever_its_folders():
    assert {floor(m) for m in MODULES} == set(ALLOWED)
    assert all(m.startswith(("pneumo", "benchmarks.")) for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_floors(module: str):
    mine = floor(module)
    wrong = [
        f"line {line}: {name} ({floor(name)})"
        for name, _, line in imports(MODULES[module])
        if name in MODULES and floor(name) not in ALLOWED[mine]
    ]
    assert not wrong, f"{module} ({mine} may import {sorted(ALLOWED[mine])}): {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if floor(m) != "benchmarks"))
def test_imports_inside_functions_only_where_the_rules_say_why(module: str):
    lazy = [(name, line) for name, inside, line in imports(MODULES[module]) if inside]
    allowed = LAZY[floor(module)]
    wrong = [f"line {line}: {name}" for name, line in lazy
             if not any(name == a or name.startswith(f"{a}.") for a in allowed)]  # fmt: skip
    assert not wrong, f"{module}: move these imports to the top (or say why in ARCHITECTURE.md): {wrong}"


def test_no_import_cycles():
    graph = {
        m: {n for n, inside, _ in imports(p) if n in MODULES and not inside} - {m} for m, p in MODULES.items()
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for target in graph[module]:
            visit(target, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])
