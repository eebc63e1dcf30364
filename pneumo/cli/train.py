"""``pneumo train``: run the training flow, as the operator, on S3 data or a local folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from mlflow.exceptions import MlflowException

from pneumo.cli.common import fail
from pneumo.cli.data import push_folder
from pneumo.config import DEFAULT_PROFILE, DEMO_SOURCE, apply_client_env, load_params, parse_overrides
from pneumo.datasets import DataError
from pneumo.services import ServiceUnavailable, http_ok
from pneumo.versioning import DvcError


def run_training(data: str, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the training flow on an S3 URI or a local folder (uploaded first), as the operator.

    Profile, overrides and the folder are checked before anything is uploaded.
    """
    settings = apply_client_env()
    try:
        load_params(profile, overrides)
    except ValueError as error:
        fail(str(error))
    if not data.startswith("s3://") and not Path(data).is_dir():
        fail(f"--data {data}: no such folder (give a local folder or an s3:// URI)")
    if not http_ok(f"{settings.prefect_api_url}/health"):
        fail(f"Prefect server {settings.prefect_api_url} is not reachable: run `pneumo stack up` first")
    source = data if data.startswith("s3://") else push_folder(Path(data))
    # Prefect and TensorFlow: imported once the clients point at the stack (see pneumo.cli).
    from pneumo.flows.training_flow import training
    from pneumo.tasks.ingest import SourceError

    try:
        return training(source=source, profile=profile, overrides=overrides, trigger="operator")
    except (ServiceUnavailable, SourceError, DataError, DvcError, MlflowException) as error:
        ui = settings.prefect_api_url.removesuffix("/api")
        fail(f"{error} (the flow run's log is in the Prefect UI, {ui})")


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
        fail(str(error))
    summary = run_training(data, profile, overrides)
    typer.echo(json.dumps(summary, default=str))
