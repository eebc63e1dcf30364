"""``pneumo deploy``: register prefect.yaml's deployments and run a worker for them."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from pneumo.cli.common import fail
from pneumo.config import apply_client_env


def deploy_cmd(
    worker: Annotated[bool, typer.Option(help="Then run a worker in the foreground.")] = True,
    healthcheck: Annotated[
        bool,
        typer.Option(help="The worker answers GET /health on PREFECT_WORKER_WEBSERVER_HOST:PORT (8080)."),
    ] = False,
) -> None:
    """Register the training and monitoring deployments (prefect.yaml) and start a worker."""
    apply_client_env()
    # Prefect: imported once the clients point at the stack (see pneumo.cli).
    from pneumo.orchestration import register_deployments, worker_command

    try:
        register_deployments()
    except RuntimeError as error:
        fail(str(error))
    typer.echo("registered deployments training/training and monitoring/monitoring", err=True)
    if worker:
        command = worker_command(healthcheck)
        os.execv(command[0], command)
