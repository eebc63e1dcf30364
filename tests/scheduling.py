"""How a test session is spread over the cores, and where its time went (hooks of tests/conftest.py).

``make test`` runs the suite on two pytest-xdist workers (``-n 2 --dist loadfile
--no-loadscope-reorder``): each worker takes a whole module at a time, in collection order, so a
module's fixtures (a trained champion, a worker) are made once and its tests keep their order. The
modules that take minutes are collected first, longest first, so that the short ones fill the gaps
at the end instead of a long one starting last (README, "Where the time goes").
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Longest first, as measured (README, "Where the time goes"); every other module keeps its place after these.
LONGEST_FIRST = (
    "flows/test_faults.py",
    "flows/test_training_flow.py",
    "flows/test_loop.py",
    "cli/test_calibrate_cmd.py",
    "cli/test_evaluate_cmd.py",
    "cli/test_stages_cmd.py",
    "flows/test_monitoring_flow.py",
    "core/test_notify.py",
    "core/test_stack.py",
)

_PHASES = ("setup", "call", "teardown")
_SPENT: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_PHASES, 0.0))


def module_of(path: Path) -> str:
    """A test module's path below tests/ (``flows/test_loop.py``)."""
    return Path(path).resolve().relative_to(TESTS).as_posix()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = module_of(item.path)
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests, and the other modules, keep their order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _SPENT[report.nodeid.split("::")[0]][report.when] += report.duration


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Seconds per module in setup, call and teardown (every worker's, added up), longest first."""
    if hasattr(config, "workerinput") or not _SPENT:  # an xdist worker: the controller reports
        return
    rows = sorted(_SPENT.items(), key=lambda row: -sum(row[1].values()))
    write = terminalreporter.write_line
    terminalreporter.section("where the time went (seconds, all workers)")
    write(f"{'module':58s} {'setup':>8s} {'call':>8s} {'teardown':>8s} {'total':>8s}")
    totals = {phase: sum(spent[phase] for _, spent in rows) for phase in _PHASES}
    for module, spent in [*rows[:20], (f"all {len(rows)} modules", totals)]:
        figures = [*(spent[phase] for phase in _PHASES), sum(spent.values())]
        write(f"{module:58s} " + " ".join(f"{figure:8.1f}" for figure in figures))
