"""``pneumo stack ...``: start, stop and inspect the local S3 + MLflow + Prefect stack."""

from __future__ import annotations

import typer

from pneumo import stack
from pneumo.cli.common import fail, print_urls
from pneumo.config import Settings

app = typer.Typer(help="Start, stop and inspect the local S3 + MLflow + Prefect stack.", no_args_is_help=True)


@app.command("up")
def stack_up() -> None:
    """Start S3, MLflow and Prefect (what is already running is left alone)."""
    settings = Settings.from_env()
    try:
        stack.up(settings)
    except RuntimeError as error:
        fail(str(error))
    print_urls(settings)


@app.command("down")
def stack_down() -> None:
    """Stop the services that `stack up` started."""
    stack.down(Settings.from_env())


@app.command("status")
def stack_status() -> None:
    """Show each service, its URL, pid and health; exit 1 if any is unhealthy."""
    rows = stack.status(Settings.from_env())
    for row in rows:
        state = "healthy" if row["healthy"] else "DOWN"
        typer.echo(f"{row['service']:8s} {state:8s} {row['url']:40s} pid={row['pid'] or '-'}")
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)
