"""`pneumo train --data DIR` and `pneumo evaluate` on small generated sets, against the real stack."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import run_cli
from sklearn.metrics import roc_auc_score

from pneumo.assessment import resolve_model
from pneumo.config import Settings
from pneumo.contract import CARD_ARTIFACT
from pneumo.metrics import REPORTED
from pneumo.storage import list_objects, s3_client
from pneumo.synth import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "pneumonia-eval-test"


@pytest.fixture(scope="module")
def trained(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model trained through the CLI from a local class-folder set, with online augmentation."""
    folder = tmp_path_factory.mktemp("local") / "clinic-folders"
    generate(folder, n=160, seed=11, size=96, layout="folders")
    result = run_cli(
        "train", "--data", str(folder), "--profile", "test", "--set", f"registry.model_name={MODEL}",
        "--set", "data.augment.online=true", "--set", "gate.min_test_auc=0",
        "--set", "gate.min_test_sensitivity=0", "--set", "gate.threshold_folds=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of other patients, in class folders."""
    folder = tmp_path_factory.mktemp("held-out")
    generate(folder, n=60, seed=12, size=120, layout="folders")
    return folder


def test_local_folder_trains_through_s3_and_dvc(trained: dict, stack: Settings):
    assert trained["promoted"] is True, trained["reasons"]
    run = mlflow.MlflowClient().get_run(trained["run_id"])
    source = run.data.tags["data_source"]
    assert source.endswith("/clinic-folders")
    keys = [item["Key"] for item in list_objects(s3_client(stack), source)]
    assert sum(key.endswith(".png") for key in keys) == 160
    assert len(trained["data_version"]) >= 8
    assert run.data.params["data.augment.online"] == "True"


def test_every_version_carries_its_model_card(trained: dict):
    client = mlflow.MlflowClient()
    version = client.get_model_version(MODEL, trained["version"])
    card = Path(client.download_artifacts(trained["run_id"], CARD_ARTIFACT)).read_text()
    assert version.description == card
    for heading in ("## Intended use", "## Data", "## Metrics", "## Threshold policy", "## Known limits"):
        assert heading in card
    assert f"| auc | {trained['test_auc']:.3f} |" in card
    assert f"{trained['threshold']:.4f}" in card and "not diagnose" in card
    assert "out-of-fold predictions of 2 models" in card  # gate.threshold_folds=2
    assert "## At another site" in card and "pneumo calibrate --site NAME" in card
    assert "The threshold each of the 2 folds would choose on its own ranges" in card
    assert f"sigmoid({trained['calibration_a']:.3f} * logit(score)" in card
    for condition in ("squashed_jpeg75", "gamma_0.67", "low_res_112px"):  # at the stored threshold
        assert f"| {condition} | {trained[f'degraded_{condition}_auc']:.3f} |" in card


def test_cross_validated_threshold_is_logged(trained: dict):
    metrics = mlflow.MlflowClient().get_run(trained["run_id"]).data.metrics
    assert metrics["threshold"] == pytest.approx(trained["threshold"])
    assert 0.0 <= metrics["oof_auc"] <= 1.0
    assert metrics["oof_sensitivity"] >= 0.95  # chosen for gate.target_sensitivity on those predictions


def test_evaluate_scores_the_champion_with_intervals(trained: dict, held_out: Path, tmp_path: Path):
    out, json_file = tmp_path / "report", tmp_path / "metrics.json"
    result = run_cli("evaluate", "--data", str(held_out), "--model", f"models:/{MODEL}@champion", "--json",
                     str(json_file), "--out", str(out), "--resamples", "200", "--mlflow")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(json_file.read_text())
    assert report == json.loads((out / "metrics.json").read_text())
    assert report["model_version"] == trained["version"]
    assert report["threshold"] == pytest.approx(trained["threshold"])
    assert report["images"] == 60 and report["unreadable"] == 0
    for name in REPORTED:
        low, high = report["intervals"][name]
        assert low <= report[name] <= high, name
        assert f"{name:12s} {report[name]:7.3f}" in result.stdout
    cells = report["confusion_matrix"]
    assert sum(cells.values()) == 60 and cells["tp"] + cells["fn"] == report["positives"]

    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 60 and set(predictions["label"]) == {0, 1}
    assert roc_auc_score(predictions["label"], predictions["probability"]) == pytest.approx(report["auc"])
    assert ((predictions["probability"] >= report["threshold"]).astype(int) == predictions["predicted"]).all()
    for plot in ("roc.png", "confusion_matrix.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run_id = result.stdout.split("logged to MLflow run ")[1].split()[0]
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["auc"] == pytest.approx(report["auc"])
    assert run.data.metrics["sensitivity_ci_low"] == pytest.approx(report["intervals"]["sensitivity"][0])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation")}
    assert "evaluation/predictions.csv" in artifacts


def test_evaluate_a_given_version_on_the_nih_layout(trained: dict, synthetic_dir: Path, tmp_path: Path):
    model = f"models:/{MODEL}/{trained['version']}"
    result = run_cli("evaluate", "--data", str(synthetic_dir), "--model", model, "--json",
                     str(tmp_path / "m.json"), "--threshold", "0.5", "--resamples", "50")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "m.json").read_text())
    csv = pd.read_csv(synthetic_dir / "Data_Entry_2017.csv")
    kept = csv["Finding Labels"].str.contains("Pneumonia") | (csv["Finding Labels"] == "No Finding")
    assert report["images"] == int(kept.sum()) and report["threshold"] == 0.5


def test_default_model_is_the_champion(trained: dict):
    spec = resolve_model(None, MODEL)
    assert spec.uri == f"models:/{MODEL}@champion" and spec.version == trained["version"]


def test_evaluate_errors_are_clear(trained: dict, tmp_path: Path):
    (tmp_path / "unlabelled").mkdir()
    result = run_cli("evaluate", "--data", str(tmp_path / "unlabelled"), "--model", f"models:/{MODEL}/1")
    assert result.returncode == 2 and "no labelled images" in result.stderr
    result = run_cli("evaluate", "--data", str(tmp_path / "unlabelled"), "--model", f"models:/{MODEL}/999")
    assert result.returncode == 2 and "not found" in result.stderr
    result = run_cli("evaluate", "--data", str(tmp_path / "missing"))
    assert result.returncode == 2 and "does not exist" in result.stderr
