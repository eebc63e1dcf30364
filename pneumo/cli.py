"""The ``pneumo`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pneumo.cli_model import app as model_app
from pneumo.config import (
    DEFAULT_PROFILE,
    DEMO_SOURCE,
    Settings,
    apply_client_env,
    load_params,
    parse_overrides,
)
from pneumo.stages import app as stages_app

app = typer.Typer(help="Pneumonia detection on chest X-rays, with its MLOps loop.", no_args_is_help=True)
stack_app = typer.Typer(
    help="Start, stop and inspect the local S3 + MLflow + Prefect stack.", no_args_is_help=True
)
data_app = typer.Typer(help="Make and upload data sets.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(stages_app, name="stage")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@stack_app.command("up")
def stack_up() -> None:
    """Start S3, MLflow and Prefect (what is already running is left alone)."""
    from pneumo import stack

    settings = Settings.from_env()
    try:
        stack.up(settings)
    except RuntimeError as error:
        _fail(str(error))
    _print_urls(settings)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services that `stack up` started."""
    from pneumo import stack

    stack.down(Settings.from_env())


@stack_app.command("status")
def stack_status() -> None:
    """Show each service, its URL, pid and health; exit 1 if any is unhealthy."""
    from pneumo import stack

    rows = stack.status(Settings.from_env())
    for row in rows:
        state = "healthy" if row["healthy"] else "DOWN"
        typer.echo(f"{row['service']:8s} {state:8s} {row['url']:40s} pid={row['pid'] or '-'}")
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)


def _print_urls(settings: Settings) -> None:
    typer.echo(f"S3 endpoint:  {settings.s3_endpoint}")
    typer.echo(f"MLflow UI:    {settings.mlflow_uri}")
    typer.echo(f"Prefect UI:   {settings.prefect_api_url.removesuffix('/api')}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the data set into.")],
    n: Annotated[int, typer.Option(help="Number of images.", min=10)] = 400,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.", min=32)] = 256,
    layout: Annotated[
        str, typer.Option(help="nih (CSV + images/) or folders (NORMAL/, PNEUMONIA/).")
    ] = "nih",
) -> None:
    """Write a deterministic synthetic chest X-ray set (NIH layout or class folders)."""
    from pneumo.synth import LAYOUTS, generate

    if layout not in LAYOUTS:
        _fail(f"--layout must be one of {', '.join(LAYOUTS)}")
    rows = generate(out, n=n, seed=seed, size=size, layout=layout)
    positives = sum("Pneumonia" in str(r["Finding Labels"]) for r in rows)
    typer.echo(f"wrote {len(rows)} images ({positives} with pneumonia) to {out}")


@data_app.command("push")
def data_push(
    folder: Annotated[Path, typer.Argument(help="Local data set folder.", exists=True, file_okay=False)],
    to: Annotated[
        str | None, typer.Option(help="Target s3:// URI (default s3://<raw bucket>/<folder name>).")
    ] = None,
) -> None:
    """Mirror a folder to the raw-data bucket: upload its files, remove objects no longer in it."""
    typer.echo(push_folder(folder, to))


def push_folder(folder: Path, to: str | None = None) -> str:
    """Mirror ``folder`` to S3 (objects no longer in it are removed) and return the URI."""
    from pneumo.storage import s3_client, sync_dir

    settings = apply_client_env()
    uri = to or f"s3://{settings.raw_bucket}/{folder.resolve().name}"
    if not any(path.is_file() for path in folder.rglob("*")):
        _fail(f"{folder} holds no files")
    count, removed = sync_dir(s3_client(settings), folder, uri)
    gone = f"; removed {removed} objects no longer in {folder}" if removed else ""
    typer.echo(f"uploaded {count} files to {uri}{gone}", err=True)
    return uri


def run_training(data: str, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the training flow on an S3 URI or a local folder (uploaded first), as the operator.

    Profile, overrides and the folder are checked before anything is uploaded.
    """
    settings = apply_client_env()
    from pneumo.stack import http_ok

    try:
        load_params(profile, overrides)
    except ValueError as error:
        _fail(str(error))
    if not data.startswith("s3://") and not Path(data).is_dir():
        _fail(f"--data {data}: no such folder (give a local folder or an s3:// URI)")
    if not http_ok(f"{settings.prefect_api_url}/health"):
        _fail(f"Prefect server {settings.prefect_api_url} is not reachable: run `pneumo stack up` first")
    source = data if data.startswith("s3://") else push_folder(Path(data))
    from mlflow.exceptions import MlflowException

    from flows.training_flow import training
    from pneumo.datasets import DataError
    from pneumo.services import ServiceUnavailable
    from tasks.ingest import DvcError, SourceError

    try:
        return training(source=source, profile=profile, overrides=overrides, trigger="operator")
    except (ServiceUnavailable, SourceError, DataError, DvcError, MlflowException) as error:
        ui = settings.prefect_api_url.removesuffix("/api")
        _fail(f"{error} (the flow run's log is in the Prefect UI, {ui})")


@app.command("train")
def train_cmd(
    data: Annotated[
        str, typer.Option(help="s3://bucket/prefix or a local folder (NIH CSV or class folders).")
    ] = DEMO_SOURCE,
    profile: Annotated[str, typer.Option(help="Profile of params.yaml.")] = DEFAULT_PROFILE,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a parameter: section.key=value.")
    ] = None,
) -> None:
    """Run the training flow; the last line printed is a JSON summary."""
    try:
        overrides = parse_overrides(set_ or [])
    except ValueError as error:
        _fail(str(error))
    summary = run_training(data, profile, overrides)
    typer.echo(json.dumps(summary, default=str))


@app.command("evaluate")
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
    log_mlflow: Annotated[
        bool, typer.Option("--mlflow", help="Log the evaluation as an MLflow run.")
    ] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
) -> None:
    """Measure a model on your own labelled images: metrics with 95% intervals, ROC, per-image CSV."""
    from datetime import UTC, datetime

    from pneumo.config import state_dir
    from pneumo.datasets import DataError
    from pneumo.stack import http_ok

    settings = apply_client_env()
    if not http_ok(f"{settings.mlflow_uri}/health"):
        _fail(
            f"MLflow {settings.mlflow_uri} is not reachable: run `pneumo stack up` or set MLFLOW_TRACKING_URI"
        )
    from tasks.assess import assess, log_to_mlflow, resolve_model, summary_lines

    params = load_params()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = out or state_dir() / "evaluations" / f"{data.resolve().name}-{stamp}"
    try:
        spec = resolve_model(model, params["registry"]["model_name"])
        if threshold is not None:
            spec.threshold = threshold
        report = assess(data, spec, params["data"], out, resamples)
    except (DataError, LookupError, ValueError) as error:
        _fail(str(error))
    for line in summary_lines(report):
        typer.echo(line)
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(report, indent=2))
    if log_mlflow:
        run_id = log_to_mlflow(report, out, params["registry"]["evaluation_experiment"])
        typer.echo(f"logged to MLflow run {run_id}")
    typer.echo(f"report files: {out} (metrics.json, predictions.csv, roc.png, confusion_matrix.png)")


from pneumo import cli_ops  # noqa: E402, F401  (registers serve, monitor, deploy, run)


def main() -> None:
    """Entry point of the ``pneumo`` console script."""
    app()
