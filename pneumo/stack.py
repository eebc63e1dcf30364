"""The local stack: SeaweedFS (S3), an MLflow tracking server and a Prefect server.

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

from pneumo.config import Settings, state_dir
from pneumo.services import http_ok
from pneumo.storage import s3_client

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Service:
    """One server of the stack: how to start it and how to tell it is healthy."""

    name: str
    command: list[str]
    health_url: str
    env: dict[str, str]
    timeout_s: float = 120.0

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
    """The three services, configured from ``settings``."""
    root = state_dir()
    p = settings.s3_port
    s3_config = root / "s3" / "identities.json"
    weed = [
        str(BIN / "weed"), "mini", f"-dir={root / 's3' / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={p}", f"-master.port={p + 1000}",
        f"-volume.port={p + 1007}", f"-filer.port={p + 555}", f"-admin.port={p + 15313}",
        f"-s3.config={s3_config}", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    mlflow = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(settings.mlflow_port),
        "--backend-store-uri", settings.mlflow_backend_uri,
        "--artifacts-destination", f"s3://{settings.mlflow_bucket}/artifacts",
        "--workers", "1",
    ]  # fmt: skip
    prefect = [
        str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
        "--port", str(settings.prefect_port), "--analytics-off",
    ]  # fmt: skip
    base_env = {**settings.client_env(), "PREFECT_HOME": str(root / "prefect")}
    return [
        Service("s3", weed, f"{settings.s3_endpoint}/healthz", base_env),
        Service("mlflow", mlflow, f"{settings.mlflow_uri}/health", base_env),
        Service("prefect", prefect, f"{settings.prefect_api_url}/health", base_env),
    ]


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
    path = state_dir() / "s3" / "identities.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = {
        "name": "pneumo",
        "credentials": [{"accessKey": settings.access_key, "secretKey": settings.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity]}))
    path.chmod(0o600)


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
            cwd=state_dir(),
            start_new_session=True,
        )
    service.pid_file.write_text(json.dumps({"pid": process.pid, "command": service.command}))
    return process.pid


def _wait_healthy(service: Service, pid: int) -> None:
    deadline = time.monotonic() + service.timeout_s
    while time.monotonic() < deadline:
        if http_ok(service.health_url):
            return
        if _read_pid(service) != pid:
            break
        time.sleep(0.5)
    tail = service.log_file.read_text(errors="replace").splitlines()[-15:]
    raise RuntimeError(
        f"{service.name} did not become healthy at {service.health_url}; "
        f"last lines of {service.log_file}:\n" + "\n".join(tail)
    )


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
    started: dict[str, tuple[Service, int]] = {}
    for service in services(settings):
        if not service.local:
            state = "reachable" if http_ok(service.health_url) else "NOT reachable"
            echo(f"{service.name:8s} external at {service.health_url.rsplit('/', 1)[0]} ({state})")
            continue
        if _read_pid(service) is not None or http_ok(service.health_url):
            echo(f"{service.name:8s} already running at {service.health_url.rsplit('/', 1)[0]}")
            continue
        started[service.name] = (service, _start(service))
        echo(f"{service.name:8s} starting (log: {service.log_file})")
    try:
        for service, pid in started.values():
            _wait_healthy(service, pid)
            echo(f"{service.name:8s} healthy")
        ensure_buckets(settings)
    except Exception:
        down(settings, only=list(started), echo=echo)
        raise
    return list(started)


def down(settings: Settings, only: list[str] | None = None, echo: Callable[[str], None] = print) -> None:
    """Stop the services this stack started (all, or those named in ``only``)."""
    for service in services(settings):
        if only is not None and service.name not in only:
            continue
        pid = _read_pid(service)
        if pid is None:
            service.pid_file.unlink(missing_ok=True)
            continue
        terminate_group(pid)
        service.pid_file.unlink(missing_ok=True)
        echo(f"{service.name:8s} stopped")


def terminate_group(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM a process group, then SIGKILL it if it is still there after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
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
            "url": s.health_url.rsplit("/", 1)[0],
            "pid": _read_pid(s),
            "healthy": http_ok(s.health_url),
        }
        for s in services(settings)
    ]


def gunicorn_command(host: str, port: int, workers: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start the prediction service under gunicorn."""
    env = {"PNEUMO_HOST": host, "PNEUMO_PORT": str(port), "PNEUMO_WORKERS": str(workers),
           "PNEUMO_THREADS": str(threads)}  # fmt: skip
    serving = importlib.util.find_spec("pneumo.serving").submodule_search_locations[0]  # not imported
    return [str(BIN / "gunicorn"), "-c", str(Path(serving) / "gunicorn.conf.py")], env
