"""The registry as the prediction service reads it: MLflow's REST API over plain HTTP.

A service worker needs four answers from the registry (the version behind an alias, its tags, and
two artifacts of its run). The ``mlflow`` package would give them at the cost of ~140 MB of memory
per worker (it imports pandas and SciPy); these few calls give them with ``requests``. Everything
else (training, the gate, the CLI) keeps using ``mlflow`` through :mod:`pneumo.models`.

Reads ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME`` and
``..._PASSWORD``, and ``MLFLOW_HTTP_REQUEST_TIMEOUT``, as the mlflow client does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from pneumo.storage import s3_client, split_uri

NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")  # as mlflow's client


class RegistryError(RuntimeError):
    """The registry answered with an error other than "not found"."""


@dataclass(frozen=True)
class RegisteredVersion:
    """What the service needs of an MLflow ``ModelVersion`` (the same attribute names)."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)


def _base() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000").rstrip("/")


def _session_kwargs() -> dict[str, Any]:
    headers, auth = {}, None
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    return {
        "headers": headers,
        "auth": auth,
        "timeout": float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")),
    }


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _get(path: str, **params: str) -> dict[str, Any] | None:
    """GET an MLflow REST endpoint: its JSON, or None when the thing does not exist.

    Only MLflow's own JSON error says "does not exist": a bare 404 means the URL is not an MLflow
    server's API (a wrong ``MLFLOW_TRACKING_URI``), which must not pass for "no such model".
    """
    response = requests.get(f"{_base()}/api/2.0/mlflow/{path}", params=params, **_session_kwargs())
    answer = _json(response)
    if not isinstance(answer, dict):
        raise RegistryError(f"{_base()} answered {response.status_code} without MLflow's JSON to {path}: "
                            "is MLFLOW_TRACKING_URI the MLflow tracking server?")  # fmt: skip
    if response.status_code in (400, 404) and answer.get("error_code") in NOT_FOUND_CODES:
        return None
    if not response.ok:
        raise RegistryError(f"the registry answered {response.status_code} to {path}: {response.text[:300]}")
    return answer


def alias_version(name: str, alias: str) -> RegisteredVersion | None:
    """The version holding ``alias`` of model ``name``; None when the alias or the model does not exist.

    Raises:
        requests.RequestException: the registry cannot be reached.
        RegistryError: it answered with another error.
    """
    found = _get("registered-models/alias", name=name, alias=alias)
    if found is None:
        return None
    version = found["model_version"]
    tags = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
    return RegisteredVersion(name, str(version["version"]), version.get("run_id", ""), tags)


def artifact(run_id: str, path: str) -> bytes | None:
    """The bytes of the artifact ``path`` of run ``run_id``; None when the run has no such artifact.

    Proxied artifacts (``mlflow-artifacts:/``, the stack's own) come through the tracking server,
    ``s3://`` ones straight from S3.

    Raises:
        requests.RequestException, RegistryError: the registry or the store failed.
        ValueError: an artifact store this client does not read.
    """
    run = _get("runs/get", run_id=run_id)
    if run is None:
        raise RegistryError(f"run {run_id} does not exist")
    root = run["run"]["info"]["artifact_uri"].rstrip("/")
    if root.startswith("mlflow-artifacts:"):
        location = root.removeprefix("mlflow-artifacts:").lstrip("/")
        url = f"{_base()}/api/2.0/mlflow-artifacts/artifacts/{quote(location)}/{quote(path)}"
        response = requests.get(url, **_session_kwargs())
        if response.status_code == 404:
            return None
        if not response.ok:
            raise RegistryError(f"the artifact store answered {response.status_code} for {path}")
        return response.content
    if root.startswith("s3://"):
        bucket, prefix = split_uri(f"{root}/{path}")
        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=prefix)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    scheme = root.split(":", 1)[0]
    raise ValueError(f"artifacts at {scheme}: are not readable by the service: use S3, or an MLflow server "
                     "that proxies artifacts (--artifacts-destination)")  # fmt: skip
