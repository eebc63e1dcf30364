"""Integration tests against the real stack: SeaweedFS S3, MLflow server, Prefect server, DVC."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import mlflow
import pytest
import requests

from flows.training import ServiceUnavailable, training
from pneumo.config import Settings, workdir
from pneumo.models import alias_version
from pneumo.storage import s3_client
from tasks.ingest import DVC, SourceError, ingest, version_data
from tasks.registry import CHAMPION, PREVIOUS, promote, rollback

pytestmark = pytest.mark.integration
MODEL = "pneumonia-classifier"


def test_stack_is_healthy_and_second_up_is_harmless(stack: Settings):
    from pneumo import stack as stack_module

    assert all(row["healthy"] and row["pid"] for row in stack_module.status(stack))
    assert stack_module.up(stack, echo=lambda _: None) == []  # nothing started twice
    response = requests.get(f"{stack.prefect_api_url}/health", timeout=5)
    assert response.status_code == 200


def test_s3_round_trip(stack: Settings):
    client = s3_client(stack)
    key = f"roundtrip/{uuid.uuid4().hex}.bin"
    payload = uuid.uuid4().bytes * 1000
    client.put_object(Bucket=stack.raw_bucket, Key=key, Body=payload)
    assert client.get_object(Bucket=stack.raw_bucket, Key=key)["Body"].read() == payload


def test_ingest_uses_cache_and_dvc_push_pull_round_trips(stack: Settings, source: str):
    raw = Path(ingest.fn(source))
    manifest = (raw / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 241  # header + 240 images + the CSV
    assert (raw / "Data_Entry_2017.csv").exists()
    version = version_data.fn(str(raw))
    assert version.endswith(".dir")

    shutil.rmtree(raw)
    shutil.rmtree(workdir() / ".dvc" / "cache")
    subprocess.run([DVC, "pull", "-q", f"{raw.relative_to(workdir())}.dvc"], cwd=workdir(), check=True)
    assert len(list((raw / "images").glob("*.png"))) == 240
    assert version_data.fn(str(raw)) == version  # same content, same version


def test_empty_source_is_a_clear_error(stack: Settings):
    with pytest.raises(SourceError, match="is empty"):
        ingest.fn(f"s3://{stack.raw_bucket}/nothing-here")
    with pytest.raises(SourceError, match="does not exist"):
        ingest.fn("s3://no-such-bucket/data")


def test_training_flow_promotes_then_gate_refuses(stack: Settings, source: str):
    first = training(source=source, profile="test")
    assert first["promoted"] is True, first["reasons"]
    champion = alias_version(MODEL, CHAMPION)
    assert str(champion.version) == first["version"]
    assert float(champion.tags["threshold"]) == pytest.approx(first["threshold"])

    run = mlflow.MlflowClient().get_run(first["run_id"])
    for metric in ("test_auc", "test_sensitivity", "test_specificity", "test_precision", "test_f1"):
        assert metric in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(first["run_id"], "val_auc")
    assert len(history) >= 1 and history[0].step == 1
    assert run.data.params["train.backbone"] == "small_cnn"
    assert run.data.tags["data_version"] == first["data_version"]
    assert len(run.data.tags["git_commit"]) >= 7
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first["run_id"], "plots")}
    assert artifacts == {"plots/learning_curves.png", "plots/roc.png", "plots/confusion_matrix.png"}

    # A candidate that must beat the champion by a full AUC point can never pass: refused, nothing moves.
    second = training(source=source, profile="test", overrides={"gate": {"max_drop": {"test_auc": -1.0}}})
    assert second["promoted"] is False
    assert any("worse than champion" in reason for reason in second["reasons"])
    assert str(alias_version(MODEL, CHAMPION).version) == first["version"]
    refused = mlflow.MlflowClient().get_model_version(MODEL, second["version"])
    assert refused.tags["gate"] == "refused"

    # The alias REST endpoint the operator uses.
    url = f"{stack.mlflow_uri}/api/2.0/mlflow/registered-models/alias"
    answer = requests.get(url, params={"name": MODEL, "alias": CHAMPION}, timeout=5).json()
    assert answer["model_version"]["version"] == first["version"]

    # Promote by hand, then roll back: champion and previous swap back, and the audit log says why.
    promote.fn(MODEL, second["version"], "integration test")
    assert str(alias_version(MODEL, PREVIOUS).version) == first["version"]
    assert rollback(MODEL, "bad model") == {"champion": first["version"], "rolled_back": second["version"]}
    assert str(alias_version(MODEL, CHAMPION).version) == first["version"]
    assert alias_version(MODEL, PREVIOUS) is None
    audit_path = mlflow.MlflowClient().download_artifacts(refused.run_id, "registry/audit.jsonl")
    events = [json.loads(line) for line in Path(audit_path).read_text().splitlines()]
    assert [e["event"] for e in events] == ["promoted", "rolled_back"]
    assert events[-1]["reason"] == "bad model"


def test_flow_run_is_recorded_in_prefect(stack: Settings):
    response = requests.post(
        f"{stack.prefect_api_url}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["training"]}}, "limit": 10},
        timeout=10,
    )
    states = [run["state_type"] for run in response.json()]
    assert "COMPLETED" in states


def test_unreachable_mlflow_fails_fast_without_promoting(stack: Settings, source: str, monkeypatch):
    before = alias_version(MODEL, CHAMPION).version
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    mlflow.set_tracking_uri("http://127.0.0.1:1")
    try:
        with pytest.raises(ServiceUnavailable, match="not reachable"):
            training(source=source, profile="test")
    finally:
        mlflow.set_tracking_uri(stack.mlflow_uri)
    assert alias_version(MODEL, CHAMPION).version == before


def test_unreachable_s3_fails_fast(stack: Settings, source: str, monkeypatch):
    monkeypatch.setenv("PNEUMO_S3_ENDPOINT", "http://127.0.0.1:1")
    with pytest.raises(SourceError, match="not reachable"):
        training(source=source, profile="test")


def test_cli_train_prints_json_summary_last(stack: Settings, source: str):
    cli = Path(shutil.which("pneumo") or Path(__file__).parents[1] / ".venv" / "bin" / "pneumo")
    result = subprocess.run(
        [str(cli), "train", "--data", source, "--profile", "test", "--set", "train.epochs=1",
         "--set", "gate.min_test_auc=1.01"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["promoted"] is False
    assert {"model_uri", "version", "test_auc", "test_sensitivity"} <= summary.keys()
    assert "below the minimum" in summary["reasons"][0]
