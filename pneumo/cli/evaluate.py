"""``pneumo evaluate``: measure a model on your own labelled images (:mod:`pneumo.assessment`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from pneumo.cli.common import fail
from pneumo.config import apply_client_env, load_params, state_dir
from pneumo.datasets import DataError
from pneumo.services import http_ok


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
    from pneumo.assessment import assess, log_to_mlflow, resolve_model, summary_lines

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
            spec.threshold = threshold
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
