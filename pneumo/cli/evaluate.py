"""``pneumo evaluate``: measure a model on your own labelled images (:mod:`pneumo.assessment`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import mlflow
import typer

from pneumo.cli.common import fail
from pneumo.config import apply_client_env, load_params, state_dir
from pneumo.datasets import DataError
from pneumo.services import http_ok

THRESHOLD_SOURCES = {
    "version": "the version's own",
    "run": "the run's",
    "site": "site {site}",
    "given": "given",
}


def evaluate_cmd(
    data: Annotated[
        Path,
        typer.Option(
            help="Labelled folder: NIH CSV or NORMAL/ and PNEUMONIA/ folders.", exists=True, file_okay=False
        ),
    ],
    model: Annotated[
        str | None, typer.Option(help="MLflow model URI, e.g. models:/NAME/3 (default: the champion).")
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics JSON here.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the report files (default under .pneumo/evaluations/).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Decide at this threshold instead of the model's stored one.", min=0.0, max=1.0),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Decide at this site's threshold (stored by `pneumo calibrate`).")
    ] = None,
    log_mlflow: Annotated[
        bool, typer.Option("--mlflow", help="Log the evaluation as an MLflow run.")
    ] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
) -> None:
    """Measure a model on your own labelled images: metrics with 95% intervals, ROC, per-image CSV."""
    settings = apply_client_env()
    if not http_ok(f"{settings.mlflow_uri}/health"):
        fail(
            f"MLflow {settings.mlflow_uri} is not reachable: run `pneumo stack up` or set MLFLOW_TRACKING_URI"
        )
    # TensorFlow: imported only by the command that needs it (see pneumo.cli).
    from pneumo.assessment import assess, resolve_model

    params = load_params()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = out or state_dir() / "evaluations" / f"{data.resolve().name}-{stamp}"
    try:
        spec = resolve_model(model, params["registry"]["model_name"])
        if site is not None and threshold is not None:
            fail("give --site or --threshold, not both")
        if site is not None:
            spec = spec.for_site(site)
        if threshold is not None:
            spec.threshold, spec.threshold_source = threshold, "given"
        report = assess(data, spec, params["data"], out, resamples)
    except (DataError, LookupError, ValueError) as error:
        fail(str(error))
    for line in summary_lines(report):
        typer.echo(line)
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(report, indent=2))
    if log_mlflow:
        run_id = log_to_mlflow(report, out, params["registry"]["evaluation_experiment"])
        typer.echo(f"logged to MLflow run {run_id}")
    typer.echo(f"report files: {out} (metrics.json, predictions.csv, roc.png, confusion_matrix.png)")


def log_to_mlflow(report: dict[str, Any], out: Path, experiment: str) -> str:
    """Log an evaluation as a new MLflow run.

    Args:
        report: the content of ``metrics.json``.
        out: the folder of the report files, logged under ``evaluation/``.
        experiment: the MLflow experiment.

    Returns:
        The run id.
    """
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"evaluate-{Path(report['data']).name}") as run:
        logged = ("model_uri", "threshold", "threshold_source", "site", "data", "images", "positives")
        mlflow.log_params({k: report[k] for k in logged if report.get(k) is not None})
        mlflow.set_tags({"model_uri": report["model_uri"], "model_version": str(report["model_version"])})
        mlflow.log_metrics({name: report[name] for name in report["intervals"]})
        for name, (low, high) in report["intervals"].items():
            bounds = {f"{name}_ci_low": low, f"{name}_ci_high": high}
            mlflow.log_metrics({key: value for key, value in bounds.items() if value is not None})
        mlflow.log_artifacts(str(out), "evaluation")
    return run.info.run_id


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a short table for the terminal."""
    cells = report["confusion_matrix"]
    source = THRESHOLD_SOURCES[report.get("threshold_source", "version")].format(**report)
    lines = [
        f"model {report['model_uri']} (version {report['model_version'] or '-'}), "
        f"threshold {report['threshold']:.4f} ({source})",
        f"data {report['data']}: {report['images']} images, {report['positives']} pneumonia, "
        f"{report['patients']} patients, {report['unreadable']} unreadable",
        f"{'metric':12s} {'value':>7s}   95% interval",
    ]
    for name, (low, high) in report["intervals"].items():
        shown = "n/a (too few patients)" if low is None else f"[{low:.3f}, {high:.3f}]"
        lines.append(f"{name:12s} {report[name]:7.3f}   {shown}")
    lines.append(f"confusion: TP {cells['tp']}  FN {cells['fn']}  FP {cells['fp']}  TN {cells['tn']}")
    return lines
