"""Faults injected by killing the real processes (kill -9) at the worst moment.

Each time: production's alias stays on a complete, passed model; the flow run ends FAILED or
CRASHED with a message that names the service; and after `pneumo stack up` a rerun succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest
from conftest import (
    CLI,
    champion_copy,
    descendants,
    start_worker,
    stop_worker,
    wait_for_flow_run,
    wait_for_task_run,
)
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from pneumo import stack as stack_module
from pneumo.config import Settings
from pneumo.contract import CHAMPION, PREVIOUS
from pneumo.models import alias_version
from pneumo.storage import s3_client, upload_dir
from pneumo.synth import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "pneumonia-faults-test"
WAIT_S = "15"  # PNEUMO_SERVICE_WAIT_S for these runs: the bound on waiting for a lost service


def _train(source: str, *extra: str) -> subprocess.Popen:
    """`pneumo train` as an operator runs it, in its own process."""
    env = {**os.environ, "PNEUMO_SERVICE_WAIT_S": WAIT_S, "COLUMNS": "250"}
    command = [CLI, "train", "--data", source, "--profile", "test", "--set", f"registry.model_name={MODEL}",
               *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_service(settings: Settings, name: str) -> None:
    (service,) = [s for s in stack_module.services(settings) if s.name == name]
    os.killpg(stack_module._read_pid(service), signal.SIGKILL)


def _stack_up() -> None:
    result = subprocess.run([CLI, "stack", "up"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def _flow_state(flow_run_id) -> tuple[str, str]:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.type.value, state.message or ""


def _assert_production_is_whole(*allowed: str) -> str:
    """The champion is one of ``allowed``, complete and passed; ``previous`` is not half moved."""
    champion = alias_version(MODEL, CHAMPION)
    assert champion is not None and champion.tags["gate"] == "passed"
    assert {"threshold", "image_size", "data_version", "data_source"} <= champion.tags.keys()
    assert str(champion.version) in allowed, (champion.version, allowed)
    previous = alias_version(MODEL, PREVIOUS)
    assert previous is None or str(previous.version) != str(champion.version)
    return str(champion.version)


def _new_version(since: datetime) -> str | None:
    """The version registered after ``since`` (by the run that was cut short), if any."""
    client = mlflow.MlflowClient()
    versions = [v for v in client.search_model_versions(f"name='{MODEL}'")
                if v.creation_timestamp / 1000 > since.timestamp()]  # fmt: skip
    return str(max(versions, key=lambda v: int(v.version)).version) if versions else None


@pytest.fixture(scope="module")
def champion(served_model: dict) -> str:
    """Production before the faults: a champion trained on the session's source (a copy)."""
    return champion_copy(served_model, MODEL)["version"]


def test_mlflow_killed_during_registration(stack: Settings, source: str, champion: str):
    before = str(alias_version(MODEL, CHAMPION).version)
    since = datetime.now(UTC)
    process = _train(source)
    task = wait_for_task_run(("register", "compare-with-champion", "record-gate", "promote"), since)
    _kill_service(stack, "mlflow")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: MLflow at ") and "unreachable" in err
    assert "MLflow unreachable while" in out + err  # each retry said so
    state, message = _flow_state(task.flow_run_id)
    assert state == "FAILED" and "MLflow at" in message, message

    _stack_up()
    # Unchanged, or (killed after the champion moved) the candidate, which passed the gate.
    _assert_production_is_whole(before, *filter(None, [_new_version(since)]))
    rerun = _train(source)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-3000:]
    _assert_production_is_whole(*[str(v.version) for v in mlflow.MlflowClient().search_model_versions(
        f"name='{MODEL}'")])  # fmt: skip


def test_s3_killed_during_ingest(stack: Settings, champion: str, tmp_path: Path):
    before = str(alias_version(MODEL, CHAMPION).version)
    folder = tmp_path / "large-site"
    generate(folder, n=1200, seed=41, size=40)
    big = f"s3://{stack.raw_bucket}/large-site"
    upload_dir(s3_client(stack), folder, big)
    since = datetime.now(UTC)
    process = _train(big, "--set", "train.epochs=1")
    task = wait_for_task_run(("ingest",), since)
    _kill_service(stack, "s3")
    _, err = process.communicate(timeout=600)
    assert process.returncode == 2, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: S3 at "), err[-2000:]
    state, message = _flow_state(task.flow_run_id)
    assert state == "FAILED" and "S3 at" in message, message

    _stack_up()
    _assert_production_is_whole(before)
    rerun = _train(big, "--set", "train.epochs=1")
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    _assert_production_is_whole(before, summary["version"])


def test_worker_killed_during_training(stack: Settings, source: str, champion: str, deployments):
    before = str(alias_version(MODEL, CHAMPION).version)
    parameters = {"source": source, "profile": "test", "overrides": {"registry": {"model_name": MODEL}}}
    worker = start_worker()
    try:
        run = run_deployment("training/training", parameters=parameters, timeout=0)
        wait_for_task_run(("train",), run.created, timeout=600)
        for pid in [*descendants(worker.pid), worker.pid]:
            os.kill(pid, signal.SIGKILL)
        worker.wait()
        crashed = wait_for_flow_run(run.id, timeout=300)
        assert crashed.state.type.value == "CRASHED", crashed.state
        assert "no heartbeat" in crashed.state.message and "worker" in crashed.state.message
        _assert_production_is_whole(before)

        _stack_up()
        worker = start_worker()
        # Run again as the schedule would: no source, so the champion's recipe is retrained.
        recipe = alias_version(MODEL, CHAMPION).tags
        again = {"overrides": {"registry": {"model_name": MODEL}}}
        rerun = run_deployment("training/training", parameters=again, timeout=900, poll_interval=1)
        assert rerun.state.is_completed(), rerun.state.message
        versions = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
        newest = max(versions, key=lambda v: int(v.version))
        trained = newest.tags
        assert (trained["data_source"], trained["profile"]) == (recipe["data_source"], recipe["profile"])
        assert trained["trigger"] == "deployment"
        _assert_production_is_whole(before, str(newest.version))
    finally:
        stop_worker(worker)
