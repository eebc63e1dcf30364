"""Waiting for a lost service: bounded, said out loud, and only for errors that mean "unreachable"."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from pneumo.config import Settings
from pneumo.services import ServiceUnavailable, unreachable_service, until_reachable
from pneumo.storage import s3_client


def _real_error(call) -> Exception:
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError("expected the call to fail")


def test_real_client_errors_of_closed_ports_name_their_service(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow_error = _real_error(lambda: mlflow.MlflowClient("http://127.0.0.1:1").get_experiment("0"))
    assert unreachable_service(mlflow_error) == "MLflow"
    monkeypatch.setenv("PNEUMO_S3_ENDPOINT", "http://127.0.0.1:1")
    s3_error = _real_error(lambda: s3_client(Settings.from_env()).list_buckets())
    assert unreachable_service(s3_error) == "S3"
    assert unreachable_service(ValueError("no")) is None
    answered = MlflowException("RESOURCE_DOES_NOT_EXIST: no such model", error_code="RESOURCE_DOES_NOT_EXIST")
    assert unreachable_service(answered) is None


def test_the_wait_is_bounded_and_every_retry_says_so(monkeypatch, capsys):
    monkeypatch.setenv("PNEUMO_SERVICE_WAIT_S", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    calls = []

    @until_reachable("registering the model")
    def register():
        calls.append(time.monotonic())
        mlflow.MlflowClient("http://127.0.0.1:1").get_experiment("0")

    started = time.monotonic()
    with pytest.raises(
        ServiceUnavailable, match=r"MLflow at .* unreachable for 3 s while registering the model"
    ):
        register()
    assert 3 <= time.monotonic() - started < 10 and len(calls) >= 2
    assert (
        capsys.readouterr().out.count("MLflow unreachable while registering the model (attempt")
        == len(calls) - 1
    )


def test_the_wait_starts_when_the_service_is_lost_not_when_the_work_started(monkeypatch):
    """A training that runs longer than the limit before MLflow goes away still gets its retries."""
    monkeypatch.setenv("PNEUMO_SERVICE_WAIT_S", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    calls = []

    @until_reachable("training")
    def train():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2.5)  # longer than the whole limit, before the first failure
        mlflow.MlflowClient("http://127.0.0.1:1").get_experiment("0")

    with pytest.raises(ServiceUnavailable):
        train()
    assert len(calls) >= 2


def test_an_error_the_service_answered_with_is_not_waited_for():
    calls = []

    @until_reachable("reading")
    def read():
        calls.append(1)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such model", error_code="RESOURCE_DOES_NOT_EXIST")

    with pytest.raises(MlflowException):
        read()
    assert calls == [1]
