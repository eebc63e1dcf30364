"""The whole loop as it runs unattended: both deployments through a real Prefect process worker,
as their schedules would run them, until COMPLETED; then drift until the retrained model is gated
and the service follows the alias."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import send_images, start_worker, stop_worker, wait_for_flow_run
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment

from pneumo.config import Settings
from pneumo.contract import CHAMPION, GATE_ARTIFACT
from pneumo.models import alias_version
from pneumo.orchestration import register_deployments
from pneumo.serving import create_app
from pneumo.synth import generate
from pneumo.tasks.retrain import recent_retrainings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "pneumonia-loop-test"
RECIPE = {"profile": "test", "overrides": {"registry": {"model_name": MODEL}}}


@pytest.fixture(scope="module")
def worker(stack: Settings):
    """The deployments of prefect.yaml registered, and a worker serving their pool."""
    register_deployments()
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
    run = run_deployment(
        "training/training", parameters={"source": source, **RECIPE, "trigger": "deployment"}, timeout=900
    )
    assert run.state.is_completed(), run.state.message
    champion = alias_version(MODEL, CHAMPION)
    assert champion is not None and champion.tags["trigger"] == "deployment"
    return {"run": run, "champion": champion}


def test_training_deployment_completes_under_the_worker(trained: dict, source: str):
    champion = trained["champion"]
    assert champion.tags["data_source"] == source and champion.tags["gate"] == "passed"


def _monitor(records_url: str):
    run = run_deployment(
        "monitoring/monitoring", parameters={"model_name": MODEL, "records_url": records_url}, timeout=600
    )
    assert run.state.is_completed(), run.state.message
    return run


def test_in_distribution_monitoring_completes_and_starts_nothing(
    trained: dict, synthetic_dir: Path, tmp_path: Path
):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    send_images([Image.open(p).copy() for p in sorted((synthetic_dir / "images").glob("*.png"))], url, MODEL)
    run = _monitor(url)
    assert _report(run.id).startswith("# Drift report: no drift")
    assert recent_retrainings("training/training", 1, MODEL) == []


def test_drift_retrains_the_champions_recipe_to_completion_and_the_service_follows(
    trained: dict, source: str, tmp_path: Path
):
    url = f"sqlite:///{tmp_path / 'records.db'}"
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
