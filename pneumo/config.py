"""One place for paths, service settings and parameters.

Hyper-parameters and gate thresholds live in ``params.yaml`` (read by DVC and the flows);
service endpoints and credentials come from environment variables with local defaults.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pneumo.postgres import LocalPostgres
from pneumo.validation import ParamsError, check_types, check_values

# The project folder (params.yaml, prefect.yaml, dvc.yaml): the checkout, or PNEUMO_HOME where the
# package is installed apart from it (the image: /app).
ROOT = Path(os.environ.get("PNEUMO_HOME") or Path(__file__).resolve().parents[1])
PARAMS_FILE = ROOT / "params.yaml"
DEFAULT_PROFILE = "default"
DEMO_PROFILE = "demo"  # the profile `make run` trains
RAW_DATA = Path("data") / "raw"  # raw snapshots, relative to the workdir
DEMO_SOURCE = "s3://pneumo-raw/synthetic"  # where `make run` uploads the synthetic data set


def state_dir() -> Path:
    """Folder holding all local service state (databases, S3 volumes, logs, caches)."""
    return Path(os.environ.get("PNEUMO_STATE_DIR", ROOT / ".pneumo")).resolve()


def workdir() -> Path:
    """The DVC project the flows write data and models into (the repository by default)."""
    return Path(os.environ.get("PNEUMO_WORKDIR", ROOT)).resolve()


def admin_token(create: bool = False) -> str | None:
    """``PNEUMO_ADMIN_TOKEN``, or the one kept in the state folder (made with ``create``).

    ``make run`` and ``pneumo deploy`` create it, so that the local service accepts the events the
    Prefect server delivers; read it from ``.pneumo/admin-token`` to call ``/admin/*`` yourself.
    """
    return _kept_token(os.environ.get("PNEUMO_ADMIN_TOKEN", ""), "admin-token", create)


def api_token(create: bool = False) -> str | None:
    """``PNEUMO_API_TOKEN``, or the one kept in the state folder (made with ``create``).

    ``make run`` and ``pneumo serve`` create it when none is set, so the service is never open by
    default; clients send it as ``Authorization: Bearer <token>`` (the page asks for it).
    """
    return _kept_token(os.environ.get("PNEUMO_API_TOKEN", ""), "api-token", create)


def _kept_token(given: str, name: str, create: bool) -> str | None:
    """``given`` (a variable's value), else ``state_dir()/name`` (written 0600 with ``create``), else None."""
    if given.strip():
        return given.strip()
    path = state_dir() / name
    if path.exists():
        return path.read_text().strip() or None  # an empty token opens nothing
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{name}.{os.getpid()}.part")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(24))
    os.replace(partial, path)  # whole or not at all: a reader never sees an empty file
    return path.read_text().strip()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the service to this machine only."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def exposure_refusal(host: str) -> str | None:
    """Why the service must not start bound to ``host`` (None: it may).

    A service that other machines can reach needs ``PNEUMO_API_TOKEN``: without it anyone who
    reaches the port could label images through ``/feedback``, and confirmed images become
    training data. ``PNEUMO_ALLOW_ANONYMOUS=1`` lifts this for a demo (the service says so loudly).
    """
    if is_loopback(host) or os.environ.get("PNEUMO_API_TOKEN", "").strip():
        return None
    if os.environ.get("PNEUMO_ALLOW_ANONYMOUS", "").strip() == "1":
        return None
    return (
        f"refusing to serve on {host} without PNEUMO_API_TOKEN: anyone who reaches the port could"
        " predict, label and read reports. Set PNEUMO_API_TOKEN (e.g. openssl rand -hex 24), bind"
        " 127.0.0.1, or set PNEUMO_ALLOW_ANONYMOUS=1 for a demo"
    )


DATABASES = ("sqlite", "postgres")


def database_kind() -> str:
    """``PNEUMO_DB``, else what ``pneumo stack up`` last ran with (``state_dir()/db``), else sqlite.

    ``PNEUMO_DB=postgres pneumo stack up`` once is enough: the choice is kept for every later command.
    """
    chosen = os.environ.get("PNEUMO_DB", "").strip().lower()
    if not chosen:
        kept = state_dir() / "db"
        chosen = kept.read_text().strip() if kept.exists() else "sqlite"
    if chosen not in DATABASES:
        raise ValueError(f"PNEUMO_DB must be one of {', '.join(DATABASES)}, not {chosen!r}")
    return chosen


@dataclass(frozen=True)
class Settings:
    """Where the services are and how to reach them; every field is an environment variable."""

    s3_port: int
    mlflow_port: int
    prefect_port: int
    s3_endpoint: str
    access_key: str
    secret_key: str
    region: str
    mlflow_uri: str
    mlflow_backend_uri: str
    prefect_api_url: str
    raw_bucket: str
    mlflow_bucket: str
    dvc_bucket: str
    reports_bucket: str
    records_url: str
    feedback_uri: str
    db: str = "sqlite"  # where MLflow, Prefect and the records keep their tables: sqlite or postgres
    postgres_port: int = 5432  # the local PostgreSQL server's, with db=postgres
    prefect_database_url: str | None = None  # PREFECT_API_DATABASE_CONNECTION_URL; None: Prefect's SQLite

    @classmethod
    def from_env(cls) -> Settings:
        """Read settings from ``PNEUMO_*`` (and the standard AWS/MLflow/Prefect) variables."""
        env = os.environ.get
        s3_port = int(env("PNEUMO_S3_PORT", "8333"))
        mlflow_port = int(env("PNEUMO_MLFLOW_PORT", "5000"))
        prefect_port = int(env("PNEUMO_PREFECT_PORT", "4200"))
        db, postgres_port = database_kind(), int(env("PNEUMO_POSTGRES_PORT", "5432"))
        if db == "postgres":
            server = LocalPostgres(state_dir() / "postgres", postgres_port)
            mlflow_db, records_db = server.url("mlflow"), server.url("predictions")
            prefect_db: str | None = server.url("prefect", driver="postgresql+asyncpg")
        else:
            mlflow_db = f"sqlite:///{state_dir() / 'mlflow' / 'mlflow.db'}"
            records_db, prefect_db = f"sqlite:///{state_dir() / 'predictions.db'}", None
        return cls(
            s3_port=s3_port,
            mlflow_port=mlflow_port,
            prefect_port=prefect_port,
            s3_endpoint=env("PNEUMO_S3_ENDPOINT", f"http://127.0.0.1:{s3_port}"),
            access_key=env("AWS_ACCESS_KEY_ID", "pneumo"),
            secret_key=env("AWS_SECRET_ACCESS_KEY", "pneumo-secret"),
            region=env("AWS_DEFAULT_REGION", "us-east-1"),
            mlflow_uri=env("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{mlflow_port}"),
            mlflow_backend_uri=env("PNEUMO_MLFLOW_BACKEND_URI", mlflow_db),
            prefect_api_url=env("PREFECT_API_URL", f"http://127.0.0.1:{prefect_port}/api"),
            raw_bucket=env("PNEUMO_RAW_BUCKET", "pneumo-raw"),
            mlflow_bucket=env("PNEUMO_MLFLOW_BUCKET", "pneumo-mlflow"),
            dvc_bucket=env("PNEUMO_DVC_BUCKET", "pneumo-dvc"),
            reports_bucket=env("PNEUMO_REPORTS_BUCKET", "pneumo-reports"),
            records_url=env("PNEUMO_RECORDS_URL", records_db),
            # Confirmed images, de-identified, in class folders: a further training source.
            feedback_uri=env(
                "PNEUMO_FEEDBACK_URI", f"s3://{env('PNEUMO_RAW_BUCKET', 'pneumo-raw')}/feedback"
            ),
            db=db,
            postgres_port=postgres_port,
            prefect_database_url=env("PREFECT_API_DATABASE_CONNECTION_URL", prefect_db),
        )

    @property
    def buckets(self) -> list[str]:
        """Buckets the stack creates."""
        return list(self.bucket_names.values())

    @property
    def bucket_names(self) -> dict[str, str]:
        """Each bucket by its use: raw, mlflow, dvc, reports."""
        return {"raw": self.raw_bucket, "mlflow": self.mlflow_bucket, "dvc": self.dvc_bucket,
                "reports": self.reports_bucket}  # fmt: skip

    def client_env(self) -> dict[str, str]:
        """Environment that points MLflow, Prefect, boto3 and DVC clients at these services."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DVC_NO_ANALYTICS": "1",
            "ITERATIVE_DO_NOT_TRACK": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # Short client retries: pneumo.services bounds the wait for a lost service, and says so.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
            # Flow runs send heartbeats; a run whose process died is marked CRASHED (pneumo.orchestration).
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            # Tasks run outside a flow (pneumo model, pneumo stage): their logs go to the terminal.
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        }


def apply_client_env(settings: Settings | None = None) -> Settings:
    """Export the client environment into this process (values already set win)."""
    settings = settings or Settings.from_env()
    for key, value in settings.client_env().items():
        os.environ.setdefault(key, value)
    return settings


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=1", "gate.min_auc=0.9"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not of the form section.key=value")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return nested


def load_params(
    profile: str = DEFAULT_PROFILE,
    overrides: dict[str, Any] | None = None,
    path: Path = PARAMS_FILE,
) -> dict[str, Any]:
    """Parameters of one profile: the base sections, the profile on top, then overrides.

    Every value is checked (:mod:`pneumo.validation`) before the parameters are returned, so a
    wrong key or value stops a command before it uploads, ingests or trains anything.

    Args:
        profile: name of a profile under ``profiles:`` in params.yaml, or ``default``.
        overrides: nested values that win over both.
        path: the params file.

    Returns:
        The merged parameters, with ``profile`` recorded in them.

    Raises:
        ParamsError: the profile does not exist, or a key or value is not one the recipe can use.
    """
    raw = yaml.safe_load(path.read_text())
    profiles = raw.pop("profiles", {}) or {}
    raw.pop("dvc", None)
    if profile != DEFAULT_PROFILE and profile not in profiles:
        known = ", ".join([DEFAULT_PROFILE, *sorted(profiles)])
        raise ParamsError(f"unknown profile {profile!r}; known profiles: {known}")
    check_types(raw, profiles.get(profile, {}), prefix="")
    check_types(raw, overrides or {})
    params = _deep_merge(_deep_merge(raw, profiles.get(profile, {})), overrides or {})
    check_values(params)
    params["profile"] = profile
    return params


def cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
