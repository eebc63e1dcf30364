"""``pneumo monitor``: run the monitoring flow once, now."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pneumo.cli.common import fail
from pneumo.config import apply_client_env


def monitor_cmd(
    since: Annotated[
        str | None, typer.Option(help="Window start, ISO 8601 (default: 7 days before --until).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Window end, ISO 8601 (default: now).")] = None,
    retrain: Annotated[bool, typer.Option(help="Start the training deployment on drift.")] = True,
) -> None:
    """Run the monitoring flow once; the last line printed is a JSON summary."""
    apply_client_env()
    # Prefect: imported once the clients point at the stack (see pneumo.cli).
    from pneumo.flows.monitoring_flow import monitoring

    try:
        summary = monitoring(since=since, until=until, trigger_retraining=retrain)
    except (ValueError, LookupError) as error:
        fail(str(error))
    typer.echo(json.dumps(summary, default=str))
