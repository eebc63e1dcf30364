"""The ``monitoring`` flow: drift of production inputs against the training reference."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from pneumo.config import Settings, load_params
from pneumo.contract import CHAMPION
from pneumo.monitoring.performance import describe
from pneumo.tasks.monitor import (
    load_production,
    load_reference,
    measure_performance,
    parse_window,
    retraining_parameters,
    run_report,
    save_report,
    scratch_dir,
)
from pneumo.tasks.retrain import decide_and_trigger


def run_name() -> str:
    """The run's name in the Prefect UI: which model's inputs, over which window, and when."""
    parameters = flow_run.get_parameters() or {}
    model = parameters.get("model_name") or os.environ.get("PNEUMO_MODEL_NAME") or "the served model"
    since, until = parameters.get("since"), parameters.get("until")
    window = f"{since or 'the last ' + str(load_params()['monitoring']['window_days']) + ' days'}"
    window += f" to {until}" if until else ""
    return f"monitor {model}, {window} ({datetime.now(UTC):%Y-%m-%d %H:%M})"


@flow(name="monitoring", flow_run_name=run_name, log_prints=True)
def monitoring(
    since: str | None = None,
    until: str | None = None,
    trigger_retraining: bool = True,
    model_name: str | None = None,
    records_url: str | None = None,
) -> dict[str, Any]:
    """Report drift for a window of production records and decide on retraining.

    Args:
        since: ISO 8601 start of the window (default: ``monitoring.window_days`` before ``until``).
        until: ISO 8601 end of the window (default: now).
        trigger_retraining: start the training deployment when drift passes the threshold, or live
            performance dropped beyond ``monitoring.max_performance_drop``, with the champion's
            recipe (its data sources, profile and overrides; the deployment's own defaults only for
            a champion that does not record one) plus the feedback prefix of confirmed images.
        model_name: registered model whose champion gives the reference (default: as served).
        records_url: the prediction records store (default: ``PNEUMO_RECORDS_URL``).

    Returns:
        The summary: window, record count, positive rate, drift shares, live ``performance`` on
        confirmed diagnoses, the decision and the report URIs.
    """
    params = load_params()
    config = params["monitoring"]
    name = model_name or os.environ.get("PNEUMO_MODEL_NAME") or params["registry"]["model_name"]
    start, end = parse_window(since, until, config["window_days"])
    workdir = scratch_dir()
    try:
        alias = os.environ.get("PNEUMO_MODEL_ALIAS", CHAMPION)
        reference = load_reference(name, alias, workdir)
        version, recipe = reference["version"], reference["recipe"]
        url = records_url or Settings.from_env().records_url
        production = load_production(url, start, end, workdir, name, version, config["max_records"])
        window = [start.isoformat(), end.isoformat()]
        summary: dict[str, Any] = {"model_name": name, "reference_version": version, "window": window}
        summary.update(records=production["records"], positive_rate=production["positive_rate"])
        summary["compared_records"] = production["sampled"]
        summary["drift_threshold"] = config["drift_threshold"]
        summary["performance"] = measure_performance(
            production["labelled_path"], reference["metrics"], config, reference["sites"]
        )
        html = None
        enough = production["records"] >= config["min_samples"]
        if enough:
            html, drift = run_report(
                reference["path"], production["path"], workdir, config["drift_threshold"]
            )
            summary.update(drift)
        if enough or summary["performance"]["degraded"]:
            parameters = retraining_parameters(recipe, Settings.from_env().feedback_uri)
            summary.update(decide_and_trigger(summary, config, trigger_retraining, parameters))
        else:
            reason = f"{production['records']} records < minimum sample size {config['min_samples']}"
            summary.update(decision="insufficient data", reason=reason)
        try:
            summary["report_uris"] = save_report(html, summary, datetime.now(UTC), headline(summary))
        finally:  # the decision reaches the Prefect UI even when S3 refuses the report
            create_markdown_artifact(
                key="drift-report", markdown=markdown(summary), description="Weekly drift summary"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"monitoring: {summary['decision']}: {summary['reason']}")
    return {k: v for k, v in summary.items() if k != "columns"}


def headline(summary: dict[str, Any]) -> list[str]:
    """The decision and the state of the retraining behind it: the first lines of every report."""
    lines = [f"Drift report: {summary['decision']}", f"reason: {summary['reason']}"]
    if "performance" in summary:
        lines.append(describe(summary["performance"]))
    if "retraining" in summary:
        run = summary["retraining"]
        lines.append(f"retraining started: flow run {run['name']} ({run['state_name']}) with "
                     f"source {run['parameters'].get('source', 'the deployment default')}, "
                     f"profile {run['parameters'].get('profile', 'the deployment default')}")  # fmt: skip
    if "waiting_for" in summary:
        run = summary["waiting_for"]
        lines.append(f"waiting for retraining {run['name']}: {run['state_name']} since {run['created']}")
    for run in summary.get("failed", []):
        lines.append(f"retraining {run['name']} ended {run['state_name']}: {run['message'] or 'no message'}")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The short summary a reviewer reads in the Prefect UI."""
    first, *rest = headline(summary)
    lines = [
        f"# {first}",
        "",
        *(f"- {line}" for line in rest),
        f"- window: {summary['window'][0]} to {summary['window'][1]}",
        f"- production records: {summary['records']}"
        + (
            f" ({summary['positive_rate']:.0%} answered PNEUMONIA)"
            if summary.get("positive_rate") is not None
            else ""
        ),
    ]
    if "drift_share" in summary:

        def share(key: str) -> str:
            return "n/a" if summary[key] is None else f"{summary[key]:.2f}"

        lines += [
            f"- reference: {summary['model_name']} v{summary['reference_version']} training images",
            f"- drift share: **{summary['drift_share']:.2f}** against the threshold "
            f"{summary['drift_threshold']} (image statistics "
            f"{share('image_drift_share')}, embedding {share('embedding_drift_share')}, "
            f"prediction {'drifted' if summary['prediction_drift'] else 'stable'})",
            f"- drifted features: {', '.join(summary['drifted_columns']) or 'none'}",
        ]
    lines += [f"- {kind} report: `{uri}`" for kind, uri in summary.get("report_uris", {}).items()]
    return "\n".join(lines)
