"""``pneumo serve``: the prediction page and JSON API under gunicorn."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Annotated

import typer

from pneumo.cli.common import fail
from pneumo.config import admin_token, api_token, apply_client_env, exposure_refusal, is_loopback, state_dir
from pneumo.services import http_status
from pneumo.stack import gunicorn_command


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.", envvar="PNEUMO_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", envvar="PNEUMO_PORT")] = 8085,
    workers: Annotated[int, typer.Option(help="gunicorn worker processes.", envvar="PNEUMO_WORKERS")] = 1,
    threads: Annotated[int, typer.Option(help="Threads per worker.", envvar="PNEUMO_THREADS")] = 4,
) -> None:
    """Serve the champion model: web page and JSON API (gunicorn)."""
    apply_client_env()
    admin_token(create=True)  # /admin/* and the operator events Prefect delivers need it
    if (refusal := exposure_refusal(host)) is not None:
        fail(refusal)
    command, env = gunicorn_command(host, port, workers, threads)
    os.environ.update({**env, **closed_env(host)})
    typer.echo(f"serving on http://{host}:{port}", err=True)
    os.execv(command[0], command)


def closed_env(host: str) -> dict[str, str]:
    """The service's API token: ``PNEUMO_API_TOKEN``, else, bound to this machine only, the one
    kept in ``.pneumo/api-token`` (made now if need be). Nothing with ``PNEUMO_ALLOW_ANONYMOUS=1``;
    nothing elsewhere either, where the service then refuses to start
    (:func:`pneumo.config.exposure_refusal`).
    """
    if os.environ.get("PNEUMO_ALLOW_ANONYMOUS", "").strip() == "1" and not os.environ.get("PNEUMO_API_TOKEN"):
        return {}
    token = api_token(create=is_loopback(host))
    return {"PNEUMO_API_TOKEN": token} if token else {}


def token_note() -> str:
    """Where the API token is, for the addresses printed at start."""
    given = os.environ.get("PNEUMO_API_TOKEN", "").strip()
    where = "PNEUMO_API_TOKEN" if given else state_dir() / "api-token"
    return f"API token:               {api_token()}  (from {where}; send Authorization: Bearer <token>)"


def start_service(port: int, ready_within_s: float = 300) -> subprocess.Popen:
    """Start gunicorn in its own process group and wait until it serves a model."""
    admin_token(create=True)  # /admin/* and the operator events Prefect delivers need it
    command, env = gunicorn_command("127.0.0.1", port, workers=1, threads=4)
    env = {**os.environ, **env, **closed_env("127.0.0.1")}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + ready_within_s
    while http_status(f"http://127.0.0.1:{port}/ready", timeout=5) != 200:
        if server.poll() is not None or time.monotonic() > deadline:
            fail(f"the prediction service did not become ready on port {port}")
        time.sleep(1)
    return server
