"""The ``pneumo`` commands that run services: serve, monitor, deploy, and run (the whole demo).

They register on :data:`pneumo.cli.app`, which imports this module last.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from pneumo.cli import _fail, _print_urls, app, data_synth, push_folder, run_training
from pneumo.config import DEMO_SOURCE, apply_client_env, workdir


def gunicorn_command(host: str, port: int, workers: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start the prediction service under gunicorn."""
    import sys

    from pneumo.config import ROOT

    env = {"PNEUMO_HOST": host, "PNEUMO_PORT": str(port), "PNEUMO_WORKERS": str(workers),
           "PNEUMO_THREADS": str(threads)}  # fmt: skip
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    return [gunicorn, "-c", str(ROOT / "serving" / "gunicorn.conf.py")], env


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8085,
    workers: Annotated[int, typer.Option(help="gunicorn worker processes.")] = 1,
    threads: Annotated[int, typer.Option(help="Threads per worker.")] = 4,
) -> None:
    """Serve the champion model: web page and JSON API (gunicorn)."""
    import os

    apply_client_env()
    command, env = gunicorn_command(host, port, workers, threads)
    os.environ.update(env)
    typer.echo(f"serving on http://{host}:{port}", err=True)
    os.execv(command[0], command)


@app.command("monitor")
def monitor_cmd(
    since: Annotated[
        str | None, typer.Option(help="Window start, ISO 8601 (default: 7 days before --until).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Window end, ISO 8601 (default: now).")] = None,
    retrain: Annotated[bool, typer.Option(help="Start the training deployment on drift.")] = True,
) -> None:
    """Run the monitoring flow once; the last line printed is a JSON summary."""
    apply_client_env()
    from flows.monitoring_flow import monitoring

    try:
        summary = monitoring(since=since, until=until, trigger_retraining=retrain)
    except (ValueError, LookupError) as error:
        _fail(str(error))
    typer.echo(json.dumps(summary, default=str))


WORK_POOL = "pneumo-process"


def register_deployments() -> None:
    """Create the process work pool if needed, register every deployment of prefect.yaml, and the
    automation that marks flow runs whose process died as CRASHED."""
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from pneumo.config import ROOT
    from pneumo.orchestration import ensure_zombie_automation

    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "PNEUMO_HOME": str(ROOT)}
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                template = ProcessWorker.get_default_base_job_template()
                client.create_work_pool(
                    WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template)
                )
    result = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        _fail(f"prefect deploy failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    ensure_zombie_automation()


def worker_command() -> list[str]:
    """The command that starts a Prefect worker on the project's work pool."""
    import sys

    return [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", WORK_POOL]


@app.command("deploy")
def deploy_cmd(
    worker: Annotated[bool, typer.Option(help="Then run a worker in the foreground.")] = True,
) -> None:
    """Register the training and monitoring deployments (prefect.yaml) and start a worker."""
    import os

    apply_client_env()
    register_deployments()
    typer.echo("registered deployments training/training and monitoring/monitoring", err=True)
    if worker:
        command = worker_command()
        os.execv(command[0], command)


@app.command("run")
def run_demo(
    n: Annotated[int, typer.Option(help="Synthetic images to generate.")] = 400,
    profile: Annotated[str, typer.Option(help="Profile of params.yaml.")] = "demo",
    port: Annotated[int, typer.Option(help="Port of the prediction service.")] = 8085,
) -> None:
    """The main job: stack up, synthetic data, training flow, then serve the champion until Ctrl-C."""
    import subprocess

    from pneumo import stack

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
        server = _start_service(port)
        children.append(server)
        register_deployments()
        children.append(subprocess.Popen(worker_command(), start_new_session=True, stdout=subprocess.DEVNULL))
        _print_urls(settings)
        typer.echo(f"Prediction page and API: http://127.0.0.1:{port}  (POST /predict with a PNG or JPEG)")
        typer.echo(f"Drift reports:           http://127.0.0.1:{port}/reports  (pneumo monitor makes one)")
        typer.echo("Deployments training and monitoring (daily) are registered; a worker runs them.")
        typer.echo("Everything is up. Press Ctrl-C to stop what this command started.")
        while server.poll() is None:
            time.sleep(1)
        _fail(f"the prediction service stopped (exit code {server.returncode}); see its log above")
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # nothing may cut the shutdown short
        for child in children:
            if child.poll() is None:
                _quiet_echo(f"stopping {Path(child.args[0]).name} (pid {child.pid})")
                stack.terminate_group(child.pid)
        if started:
            _quiet_echo("stopping " + ", ".join(started))
            stack.down(settings, only=started, echo=_quiet_echo)


def _start_service(port: int):
    """Start gunicorn in its own process group and wait until it serves a model."""
    import os
    import subprocess

    command, env = gunicorn_command("127.0.0.1", port, workers=1, threads=4)
    server = subprocess.Popen(command, env={**os.environ, **env}, start_new_session=True)
    deadline = time.monotonic() + 300
    from pneumo.stack import http_status

    while http_status(f"http://127.0.0.1:{port}/ready", timeout=5) != 200:
        if server.poll() is not None or time.monotonic() > deadline:
            _fail(f"the prediction service did not become ready on port {port}")
        time.sleep(1)
    return server


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _quiet_echo(message: str) -> None:
    """Print, unless the terminal or pipe is gone (the shutdown must go on regardless)."""
    with contextlib.suppress(OSError):
        typer.echo(message)
