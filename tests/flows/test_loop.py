"""The whole loop as it runs unattended: both deployments through a real Prefect process worker,
as their schedules would run them, until COMPLETED; then drift until the retrained model is gated
and the service follows the alias."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from conftest import (
    flow_runs_of,
    run_deployment_when_free,
    running_service,
    send_images,
    start_worker,
    stop_worker,
    wait_for_flow_run,
)
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment

from pneumo.contract import CHAMPION, GATE_ARTIFACT
from pneumo.models import alias_version
from pneumo.monitoring.records import read_records
from pneumo.serving import create_app
from pneumo.synth import generate
from pneumo.tasks.retrain import recent_retrainings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.postgres]
MODEL = "pneumonia-loop-test"
RECIPE = {"profile": "test", "overrides": {"registry": {"model_name": MODEL}}}


@pytest.fixture(scope="module")
def worker(deployments):
    """The deployments of prefect.yaml registered, and a worker serving their pool."""
    process = start_worker()
    yield process
    stop_worker(process)


def _report(flow_run_id) -> str:
    """The drift-report artifact the monitoring run published (what an operator reads in the UI)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return next(a.data for a in artifacts if a.key == "drift-report")


@pytest.fixture(scope="module")
def trained(worker, source: str) -> dict:
    """The training deployment run by the worker: the champion of the loop."""
    parameters = {"source": source, **RECIPE, "trigger": "deployment"}
    run = run_deployment("training/training", parameters=parameters, timeout=900, poll_interval=1)
    assert run.state.is_completed(), run.state.message
    champion = alias_version(MODEL, CHAMPION)
    assert champion is not None and champion.tags["trigger"] == "deployment"
    return {"run": run, "champion": champion}


def test_training_deployment_completes_under_the_worker(trained: dict, source: str):
    champion = trained["champion"]
    assert champion.tags["data_source"] == source and champion.tags["gate"] == "passed"


def _monitor(records_url: str):
    run = run_deployment_when_free("monitoring/monitoring", {"model_name": MODEL, "records_url": records_url})
    assert run.state.is_completed(), run.state.message
    return run


def test_two_replicas_record_into_one_store_and_the_monitoring_run_sees_both(
    trained: dict, synthetic_dir: Path, records_url: str
):
    """Scaled out as compose would run it: two API replicas (gunicorn processes) and the worker share
    one records store (PostgreSQL with PNEUMO_TEST_DB=postgres) and one S3. In distribution, the
    monitoring run reads every record of both replicas, and starts nothing."""
    env = {"PNEUMO_MODEL_NAME": MODEL, "PNEUMO_RECORDS_URL": records_url, "PNEUMO_RELOAD_INTERVAL": "0"}
    paths = sorted((synthetic_dir / "images").glob("*.png"))
    answered: dict[str, list[str]] = {}
    with running_service(env, ready="/ready") as first, running_service(env, ready="/ready") as second:
        for index, path in enumerate(paths):
            replica = (first, second)[index % 2]
            response = requests.post(
                f"{replica}/predict", files={"file": (path.name, path.read_bytes())}, timeout=60
            )
            assert response.status_code == 200, response.text
            answered.setdefault(replica, []).append(response.json()["request_id"])
        deadline = time.monotonic() + 60  # each replica's recorder writes in the background
        while len(read_records(records_url, model_name=MODEL)) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.5)
    recorded = {row["request_id"] for row in read_records(records_url, model_name=MODEL)}
    assert all(set(ids) <= recorded for ids in answered.values()) and len(answered) == 2
    run = _monitor(records_url)
    report = _report(run.id)
    assert report.startswith("# Drift report: no drift"), report
    assert f"production records: {len(paths)}" in report
    assert recent_retrainings("training/training", 1, MODEL) == []


def _cancelled_with(parameters: dict, deployment_id, since: datetime) -> list:
    """The deployment's runs cancelled since ``since`` with ``parameters`` (not a scheduled run's)."""
    return [r for r in flow_runs_of(deployment_id, ("CANCELLED",), since) if r.parameters == parameters]


def test_a_run_started_while_another_holds_the_slot_is_cancelled_and_runs_once_it_is_free(
    trained: dict, records_url: str
):
    """What CI met at 06:00 UTC: the daily run holds the monitoring deployment's one slot, so a run
    started meanwhile is cancelled with a message an operator can read (CANCEL_NEW), and started
    again once the slot is free it completes. The holder's process is stopped (SIGSTOP) to hold
    the slot for as long as the newcomer takes to be picked up, then let go (SIGCONT)."""
    parameters = {"model_name": MODEL, "records_url": records_url}
    since = datetime.now(UTC)
    holder = run_deployment("monitoring/monitoring", parameters=parameters, timeout=0)
    deadline = time.monotonic() + 300
    with get_client(sync_client=True) as client:
        while (found := client.read_flow_run(holder.id)).state.type.value != "RUNNING" or not (
            found.infrastructure_pid
        ):
            assert time.monotonic() < deadline, "the first monitoring run never started"
            time.sleep(0.2)
    pid = int(found.infrastructure_pid)
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            newcomer = pool.submit(run_deployment_when_free, "monitoring/monitoring", parameters)
            while not (cancelled := _cancelled_with(parameters, holder.deployment_id, since)):
                assert time.monotonic() < deadline and not newcomer.done(), "no run was cancelled"
                time.sleep(0.5)
            os.kill(pid, signal.SIGCONT)
            run = newcomer.result(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it has ended by now, unless something failed
            os.kill(pid, signal.SIGCONT)
    assert run.state.is_completed(), run.state.message
    assert wait_for_flow_run(holder.id).state.is_completed()
    assert {r.state.message for r in cancelled} == {"Deployment concurrency limit reached."}
    assert not {holder.id, run.id} & {r.id for r in cancelled}


def test_drift_retrains_the_champions_recipe_to_completion_and_the_service_follows(
    trained: dict, source: str, tmp_path: Path, records_url: str
):
    url = records_url
    out = tmp_path / "other-site"
    generate(out, n=60, seed=31, size=96)
    # Another site's pipeline: inverted, low-contrast exports at another size.
    images = [
        Image.fromarray((255 - np.asarray(Image.open(p), np.float32) * 0.6).astype(np.uint8)).resize(
            (180, 140)
        )
        for p in sorted((out / "images").glob("*.png"))
    ]
    send_images(images, url, MODEL)
    monitoring = _monitor(url)
    report = _report(monitoring.id)
    assert report.startswith("# Drift report: retrain"), report
    (retraining,) = recent_retrainings("training/training", 1, MODEL)
    assert retraining.name in report

    finished = wait_for_flow_run(retraining.id, timeout=900)
    assert finished.state.type.value == "COMPLETED", finished.state.message
    assert finished.parameters == {"source": source, **RECIPE, "trigger": "drift"}

    client = mlflow.MlflowClient()
    (version,) = [
        v for v in client.search_model_versions(f"name='{MODEL}'") if v.tags.get("trigger") == "drift"
    ]
    decision = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{GATE_ARTIFACT}")
    assert decision["judged_on"] == ["candidate's test split", "champion's test split"]
    assert decision["champion"] == str(trained["champion"].version)
    champion = alias_version(MODEL, CHAMPION)
    if decision["promote"]:
        assert str(champion.version) == str(version.version)
    else:
        assert str(champion.version) == str(trained["champion"].version)
    app = create_app({"MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0, "RECORDS_URL": url})
    try:
        assert app.test_client().get("/ready").get_json()["model_version"] == str(champion.version)
    finally:
        app.extensions["pneumo.model"].stop()
