"""The gate's decision as the operator reads it: the ``training-gate`` artifact of a training run.

Candidate and champion metrics on each test split, their thresholds, the decision with its reasons,
and links to the MLflow run and model versions, in the Prefect UI (Artifacts, or the run's page).
"""

from __future__ import annotations

from typing import Any

import mlflow
from prefect import task
from prefect.artifacts import create_markdown_artifact

from pneumo.contract import GateDecision
from pneumo.metrics import COMPARED_LABELS
from pneumo.services import SERVICE_TASK, until_reachable


def _cell(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def gate_markdown(
    name: str,
    version: str,
    decision: GateDecision,
    results: dict[str, float],
    comparison: dict[str, Any],
    links: dict[str, str],
) -> str:
    """The ``training-gate`` artifact: what the operator reads in the Prefect UI about one candidate.

    Args:
        name: the registered model.
        version: the candidate's version.
        decision: the gate's decision.
        results: the candidate's threshold and test metrics with their intervals.
        comparison: the gate's comparison (``champion_threshold`` among it).
        links: ``run``, ``version`` and ``champion`` URLs in the MLflow UI.
    """
    champion = decision.champion
    lines = [f"# Gate: {name} v{version} {'promoted' if decision.promote else 'refused'}", ""]
    lines += [f"- {reason}" for reason in decision.reasons]
    lines.append(
        f"- candidate: [MLflow run]({links['run']}), [model version v{version}]({links['version']}), "
        f"threshold {results['threshold']:.4f}"
    )
    if champion:
        threshold = _cell(comparison.get("champion_threshold"))
        lines.append(f"- champion compared: [v{champion}]({links['champion']}), threshold {threshold}")
    else:
        lines.append("- no champion yet")
    lines += ["", "## Candidate on its own test split, at its threshold", ""]
    lines += ["| metric | value | 95% interval |", "|---|---|---|"]
    for m in ("auc", "sensitivity", "specificity"):
        low, high = _cell(results.get(f"test_{m}_ci_low")), _cell(results.get(f"test_{m}_ci_high"))
        lines.append(f"| {m} | {_cell(results.get(f'test_{m}'))} | {low} to {high} |")
    if decision.comparisons:
        lines += ["", "## Candidate vs champion on the same images (each at the target sensitivity)", ""]
        lines += ["| split | images | metric | candidate | champion | difference (95% interval) |"]
        lines += ["|---|---|---|---|---|---|"]
    for split, result in decision.comparisons.items():
        if "unavailable" in result:
            lines.append(f"| {split} | - | unavailable: {result['unavailable']} | | | |")
            continue
        for metric, label in COMPARED_LABELS.items():
            ours, theirs = _cell(result["candidate"][metric]), _cell(result["champion"][metric])
            low, high = result["interval"][metric]
            difference = f"{result['difference'][metric]:+.3f} ({_cell(low)} to {_cell(high)})"
            lines.append(
                f"| {split} | {result['size']['images']} | {label} | {ours} | {theirs} | {difference} |"
            )
    if decision.exception:
        lines += ["", f"Note: {decision.exception}"]
    return "\n".join(lines)


@task(name="publish-gate", **SERVICE_TASK)
@until_reachable("publishing the gate's decision")
def publish_gate(
    name: str,
    version: str,
    decision: GateDecision,
    results: dict[str, float],
    comparison: dict[str, Any],
    run_id: str,
) -> str:
    """Publish :func:`gate_markdown` as the run's ``training-gate`` artifact, with MLflow UI links."""
    tracking = mlflow.get_tracking_uri().rstrip("/")
    experiment = mlflow.get_run(run_id).info.experiment_id
    links = {
        "run": f"{tracking}/#/experiments/{experiment}/runs/{run_id}",
        "version": f"{tracking}/#/models/{name}/versions/{version}",
        "champion": f"{tracking}/#/models/{name}/versions/{decision.champion}",
    }
    markdown = gate_markdown(name, version, decision, results, comparison, links)
    create_markdown_artifact(key="training-gate", markdown=markdown,
                             description=f"The gate's decision on {name} v{version}")  # fmt: skip
    return markdown
