"""``pneumo run`` (``make run``): the main job, from nothing to a served model and a running loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer

from pneumo import stack
from pneumo.cli.common import fail, print_urls, quiet_echo
from pneumo.cli.data import data_synth, push_folder
from pneumo.cli.serve import start_service, token_note
from pneumo.cli.train import run_training
from pneumo.config import DEMO_PROFILE, DEMO_SOURCE, apply_client_env, workdir


def run_demo(
    n: Annotated[int, typer.Option(help="Synthetic images to generate.")] = 400,
    profile: Annotated[str, typer.Option(help="Profile of params.yaml.")] = DEMO_PROFILE,
    port: Annotated[int, typer.Option(help="Port of the prediction service.")] = 8085,
) -> None:
    """The main job: stack up, synthetic data, training flow, then serve the champion until Ctrl-C."""
    settings = apply_client_env()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    started: list[str] = []
    children: list[subprocess.Popen] = []
    try:
        started = stack.up(settings)
        out = workdir() / "data" / "external" / "synthetic"
        data_synth(out, n=n, seed=0, size=256, layout="nih")
        summary = run_training(push_folder(out, DEMO_SOURCE), profile, {})
        typer.echo(json.dumps(summary, default=str))
        os.environ.setdefault("PNEUMO_EVENTS_URL", f"http://127.0.0.1:{port}/admin/events")  # this service
        server = start_service(port)
        children.append(server)
        # Prefect: imported once the clients point at the stack (see pneumo.cli).
        from pneumo.orchestration import register_deployments, worker_command

        try:
            register_deployments()
        except RuntimeError as error:
            fail(str(error))
        children.append(subprocess.Popen(worker_command(), start_new_session=True, stdout=subprocess.DEVNULL))
        print_urls(settings)
        typer.echo(f"Prediction page and API: http://127.0.0.1:{port}  (POST /predict: PNG, JPEG or DICOM)")
        typer.echo(f"Drift reports:           http://127.0.0.1:{port}/reports  (pneumo monitor makes one)")
        typer.echo(token_note())
        typer.echo("Deployments training and monitoring (daily) are registered; a worker runs them.")
        typer.echo("Everything is up. Press Ctrl-C to stop what this command started.")
        while server.poll() is None:
            time.sleep(1)
        fail(f"the prediction service stopped (exit code {server.returncode}); see its log above")
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # nothing may cut the shutdown short
        for child in children:
            if child.poll() is None:
                quiet_echo(f"stopping {Path(child.args[0]).name} (pid {child.pid})")
                stack.terminate_group(child.pid)
        if started:
            quiet_echo("stopping " + ", ".join(started))
            stack.down(settings, only=started, echo=quiet_echo)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
