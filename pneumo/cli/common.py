"""What every command shares: how an error ends a command, and where the services are."""

from __future__ import annotations

import contextlib
from typing import NoReturn

import typer

from pneumo.config import Settings


def fail(message: str) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with code 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def print_urls(settings: Settings) -> None:
    """The addresses of the stack's services, for the operator."""
    typer.echo(f"S3 endpoint:  {settings.s3_endpoint}")
    typer.echo(f"MLflow UI:    {settings.mlflow_uri}")
    typer.echo(f"Prefect UI:   {settings.prefect_api_url.removesuffix('/api')}")


def quiet_echo(message: str) -> None:
    """Print, unless the terminal or pipe is gone (a shutdown must go on regardless)."""
    with contextlib.suppress(OSError):
        typer.echo(message)
