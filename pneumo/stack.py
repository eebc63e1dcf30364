"""The local stack: SeaweedFS (S3), an MLflow tracking server and a Prefect server, and with
``PNEUMO_DB=postgres`` the PostgreSQL server that MLflow, Prefect and the records then share.

Every process binds to 127.0.0.1, keeps its state under one folder, and is started in its own
process group so that ``down`` ends exactly what ``up`` started (and nothing else).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pneumo import s3_identities
from pneumo.config import Settings, state_dir
from pneumo.postgres import LocalPostgres, run_as
from pneumo.services import http_ok
from pneumo.storage import s3_client

BIN = Path(sys.executable).parent
# MLflow 3's server also starts a GenAI job runner (8 processes, ~2 GB of memory and ~16 s of CPU at
# every start) that pneumo never uses.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass(frozen=True)
class Service:
    """One server of the stack: how to start it and how to tell it is healthy."""

    name: str
    command: list[str]
    health_url: str
    env: dict[str, str]
    timeout_s: float = 120.0
    healthy: Callable[[], bool] | None = None  # instead of an HTTP check of ``health_url``
    user: str | None = None  # run as this user (PostgreSQL, when we are root)
    stop_signal: int = signal.SIGTERM
    prepare: Callable[[], None] | None = None  # before it starts (initdb)
    # The services after it need it: ``up`` waits until it is healthy, runs this, then goes on.
    serve_the_others: Callable[[], None] | None = None

    def is_healthy(self) -> bool:
        return self.healthy() if self.healthy else http_ok(self.health_url)

    @property
    def local(self) -> bool:
        """False when the URL points elsewhere (a remote S3, MLflow or Prefect): not ours to run."""
        host = urllib.parse.urlsplit(self.health_url).hostname
        return host in ("127.0.0.1", "localhost", "::1")

    @property
    def pid_file(self) -> Path:
        return state_dir() / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return state_dir() / "logs" / f"{self.name}.log"


def services(settings: Settings) -> list[Service]:
    """The services, configured from ``settings``: PostgreSQL first when ``db`` is postgres."""
    root = state_dir()
    p = settings.s3_port
    s3_config = root / "s3" / "identities.json"
    weed = [
        str(BIN / "weed"), "mini", f"-dir={root / 's3' / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={p}", f"-master.port={p + 1000}",
        f"-volume.port={p + 1007}", f"-filer.port={p + 555}", f"-admin.port={p + 15313}",
        f"-s3.config={s3_config}", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    # The backend store's URL may hold a password: it goes in the environment, not the command line.
    mlflow = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(settings.mlflow_port),
        "--artifacts-destination", f"s3://{settings.mlflow_bucket}/artifacts", "--workers", "1",
    ]  # fmt: skip
    prefect = [
        str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
        "--port", str(settings.prefect_port), "--analytics-off",
    ]  # fmt: skip
    base_env = {**settings.client_env(), "PREFECT_HOME": str(root / "prefect")}
    prefect_env = {**base_env}
    if settings.prefect_database_url:
        prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
    stack = [
        Service("s3", weed, f"{settings.s3_endpoint}/healthz", base_env),
        Service("mlflow", mlflow, f"{settings.mlflow_uri}/health",
                {**base_env, "MLFLOW_BACKEND_STORE_URI": settings.mlflow_backend_uri, **MLFLOW_SERVER_ENV}),
        Service("prefect", prefect, f"{settings.prefect_api_url}/health", prefect_env),
    ]  # fmt: skip
    if settings.db == "postgres":
        server = local_postgres(settings)
        url = f"postgresql://127.0.0.1:{server.port}"
        stop = signal.SIGINT  # PostgreSQL's fast shutdown: SIGTERM waits for every client to leave
        stack.insert(0, Service("postgres", server.command(), url, base_env, healthy=server.ready,
                                user=run_as(), stop_signal=stop, prepare=server.initialise,
                                serve_the_others=server.create_databases))  # fmt: skip
    return stack


def local_postgres(settings: Settings) -> LocalPostgres:
    """The stack's PostgreSQL server (``PNEUMO_DB=postgres``)."""
    return LocalPostgres(state_dir() / "postgres", settings.postgres_port)


def _read_pid(service: Service) -> int | None:
    try:
        pid = json.loads(service.pid_file.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # A pid can be reused by an unrelated process: only claim it if it runs our command.
    return pid if service.command[0].encode() in cmdline[:2] else None


def _write_s3_identities(settings: Settings) -> None:
    """One identity with every right: the local stack is one user's (compose.yaml has one per role)."""
    admin = {"admin": (settings.access_key, settings.secret_key)}
    s3_identities.write(state_dir() / "s3" / "identities.json", admin, settings.bucket_names)


def _start(service: Service) -> int:
    service.log_file.parent.mkdir(parents=True, exist_ok=True)
    service.pid_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env}
    with service.log_file.open("ab") as log:
        process = subprocess.Popen(
            service.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=state_dir() if service.user is None else "/",
            start_new_session=True,
            user=service.user,
        )
    service.pid_file.write_text(json.dumps({"pid": process.pid, "command": service.command}))
    return process.pid


def _wait_healthy(service: Service, pid: int) -> None:
    deadline = time.monotonic() + service.timeout_s
    while time.monotonic() < deadline:
        if service.is_healthy():
            return
        if not _alive(pid):  # (not _read_pid: just after the fork, the child is not the command yet)
            break
        time.sleep(0.5)
    tail = service.log_file.read_text(errors="replace").splitlines()[-15:]
    raise RuntimeError(
        f"{service.name} did not become healthy at {service.health_url}; "
        f"last lines of {service.log_file}:\n" + "\n".join(tail)
    )


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def ensure_buckets(settings: Settings) -> None:
    """Create the project's buckets if they are missing."""
    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in settings.buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def up(settings: Settings, echo: Callable[[str], None] = print) -> list[str]:
    """Start whatever is not running yet, wait until all are healthy, create the buckets.

    Returns:
        Names of the services this call started (empty when all were already up).
    """
    _write_s3_identities(settings)
    if os.environ.get("PNEUMO_DB"):  # kept, so that later commands need not repeat it
        (state_dir() / "db").write_text(settings.db)
    started: dict[str, tuple[Service, int]] = {}
    try:
        for service in services(settings):
            if not service.local:
                state = "reachable" if service.is_healthy() else "NOT reachable"
                echo(f"{service.name:8s} external at {_where(service)} ({state})")
                continue
            if _read_pid(service) is not None or service.is_healthy():
                echo(f"{service.name:8s} already running at {_where(service)}")
            else:
                if service.prepare:
                    service.prepare()
                started[service.name] = (service, _start(service))
                echo(f"{service.name:8s} starting (log: {service.log_file})")
            if service.serve_the_others:
                if service.name in started:
                    _wait_healthy(service, started[service.name][1])
                service.serve_the_others()
        for service, pid in started.values():
            if not service.serve_the_others:
                _wait_healthy(service, pid)
            echo(f"{service.name:8s} healthy")
        ensure_buckets(settings)
    except Exception:
        down(settings, only=list(started), echo=echo)
        raise
    return list(started)


def _where(service: Service) -> str:
    return service.health_url.rsplit("/", 1)[0] if service.healthy is None else service.health_url


def down(settings: Settings, only: list[str] | None = None, echo: Callable[[str], None] = print) -> None:
    """Stop the services this stack started (all, or those named in ``only``), the database last."""
    for service in reversed(services(settings)):
        if only is not None and service.name not in only:
            continue
        pid = _read_pid(service)
        if pid is None:
            service.pid_file.unlink(missing_ok=True)
            continue
        terminate_group(pid, stop_signal=service.stop_signal)
        service.pid_file.unlink(missing_ok=True)
        echo(f"{service.name:8s} stopped")


def terminate_group(pid: int, grace_s: float = 20.0, stop_signal: int = signal.SIGTERM) -> None:
    """Signal a process group (SIGTERM), then SIGKILL it if it is still there after ``grace_s``."""
    try:
        os.killpg(pid, stop_signal)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(settings: Settings) -> list[dict[str, object]]:
    """One row per service: name, URL, pid (if ours) and whether it answers its health check."""
    return [
        {
            "service": s.name,
            "url": _where(s),
            "pid": _read_pid(s),
            "healthy": s.is_healthy(),
        }
        for s in services(settings)
    ]


def gunicorn_command(host: str, port: int, workers: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start the prediction service under gunicorn."""
    env = {"PNEUMO_HOST": host, "PNEUMO_PORT": str(port), "PNEUMO_WORKERS": str(workers),
           "PNEUMO_THREADS": str(threads)}  # fmt: skip
    serving = importlib.util.find_spec("pneumo.serving").submodule_search_locations[0]  # not imported
    return [str(BIN / "gunicorn"), "-c", str(Path(serving) / "gunicorn.conf.py")], env
