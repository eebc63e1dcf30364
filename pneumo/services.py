"""Waiting for a service that stopped answering, for a stated time, and saying so.

A flow that loses MLflow or S3 in the middle of its work retries, logs every retry as
"MLflow unreachable" (or "S3 unreachable"), and gives up after ``PNEUMO_SERVICE_WAIT_S`` seconds
(default 120) with :class:`ServiceUnavailable`, whose message names the service, its address and
what to do. The clients' own retries are kept short (:meth:`pneumo.config.Settings.client_env`),
so this bound is the one that counts.
"""

from __future__ import annotations

import functools
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ResponseStreamingError,
)
from botocore.exceptions import ReadTimeoutError as BotoReadTimeout
from mlflow.exceptions import MlflowException

from pneumo.config import Settings

DEFAULT_WAIT_S = 120.0
T = TypeVar("T")


def http_status(url: str, timeout: float = 2.0) -> int:
    """The HTTP status ``url`` answers with, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return 0


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers with a status below 500."""
    return 0 < http_status(url, timeout) < 500


class ServiceUnavailable(RuntimeError):
    """A service the flow needs did not answer within the wait limit; the message says which."""

    retryable = False  # the wait limit is spent: a task retry would only wait again


def wait_limit_s() -> float:
    """How long a flow waits for an unreachable service: ``PNEUMO_SERVICE_WAIT_S`` (default 120)."""
    return float(os.environ.get("PNEUMO_SERVICE_WAIT_S", DEFAULT_WAIT_S))


_MLFLOW_UNREACHABLE = ("Connection refused", "Failed to establish", "Max retries exceeded",
                       "Connection aborted", "RemoteDisconnected", "timeout exception")  # fmt: skip
# What DVC (a subprocess) says when the S3 remote does not answer.
_S3_MESSAGES = ("Could not connect to the endpoint URL", "Connect timeout on endpoint URL")
_S3_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, BotoReadTimeout,
              ResponseStreamingError)  # fmt: skip


def unreachable_service(error: BaseException) -> str | None:
    """``"MLflow"`` or ``"S3"`` when ``error`` means that service does not answer, else None.

    Errors the service answered with (a missing model, a refused request) are not "unreachable":
    they are returned as they are, without waiting.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _S3_ERRORS) or any(m in str(current) for m in _S3_MESSAGES):
            return "S3"
        if isinstance(current, MlflowException) and any(m in current.message for m in _MLFLOW_UNREACHABLE):
            return "MLflow"
        if isinstance(current, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return "MLflow"
        # boto3's transfer manager keeps the real error aside (RetriesExceededError.last_exception).
        current = getattr(current, "last_exception", None) or current.__cause__ or current.__context__
    return None


def address(service: str) -> str:
    """Where ``service`` is expected, for messages."""
    settings = Settings.from_env()
    return {"MLflow": settings.mlflow_uri, "S3": settings.s3_endpoint}.get(service, "?")


def until_reachable(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Retry the decorated function while MLflow or S3 is unreachable, up to :func:`wait_limit_s`.

    Args:
        what: the work being done, for messages ("registering the model").

    The function must be safe to call again after a partial failure (the tasks using this are).
    Each retry prints one line; at the limit :class:`ServiceUnavailable` is raised from the last
    error. Any other error is raised at once.
    """

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            limit = wait_limit_s()
            deadline: float | None = None  # the wait starts at the first failure, not at the call
            attempt = 0
            while True:
                try:
                    return function(*args, **kwargs)
                except ServiceUnavailable:
                    raise
                except Exception as error:
                    service = unreachable_service(error)
                    if service is None:
                        raise
                    attempt += 1
                    deadline = deadline if deadline is not None else time.monotonic() + limit
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ServiceUnavailable(
                            f"{service} at {address(service)} unreachable for {limit:.0f} s while {what} "
                            f"({attempt} attempts): start it (pneumo stack up) and run the flow again; "
                            f"production is unchanged. Last error: {str(error)[:300]}"
                        ) from error
                    delay = min(2.0 * attempt, 15.0, left)
                    print(
                        f"{service} unreachable while {what} (attempt {attempt}): retrying in {delay:.0f} s, "
                        f"giving up in {left:.0f} s ({str(error)[:160]})"
                    )
                    time.sleep(delay)

        return wrapper

    return decorate


def retry_unless_final(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task unless its error says retrying is useless.

    Errors with ``retryable = False`` (:class:`ServiceUnavailable`, whose wait limit is spent, or a
    champion that moved under the gate) end the task at once.
    """
    return bool(getattr(getattr(state, "data", None), "retryable", True))


# Task options for every task that talks to MLflow or S3: a couple of retries for errors the
# service answered with, none once it stayed unreachable for the wait limit.
# A step that talks to MLflow or S3: retried unless the failure is final, and stopped after an hour
# (a hung connection must not hold the training slot for ever). Bulk transfers may take longer.
SERVICE_TASK = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": retry_unless_final,
                "timeout_seconds": 3600}  # fmt: skip
TRANSFER_TASK = {**SERVICE_TASK, "timeout_seconds": 6 * 3600}
