"""The training flow against the real stack (SeaweedFS S3, MLflow, Prefect, DVC): promotion, the
gate, the registry it leaves, and the operator's registry commands on it (they need its versions)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import mlflow
import pytest
import requests
from conftest import free_port, run_cli
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from pneumo.config import Settings, load_params, workdir
from pneumo.contract import CHAMPION, GATE_ARTIFACT, GRAPH_TAG, INT8_ARTIFACT, ONNX_ARTIFACT, PREVIOUS, Recipe
from pneumo.datasets import SOURCES_FILE
from pneumo.flows.training_flow import training
from pneumo.models import alias_version
from pneumo.services import ServiceUnavailable
from pneumo.storage import s3_client, upload_dir
from pneumo.synth import generate
from pneumo.tasks.ingest import SourceError
from pneumo.tasks.monitor import retraining_parameters
from pneumo.tasks.registry import ChampionMoved, RegistryError, audit, history, promote, repair, rollback
from pneumo.tasks.train import champion_start, model_requirements

pytestmark = pytest.mark.integration


MODEL = "pneumonia-classifier"


def test_training_flow_promotes_then_gate_refuses(stack: Settings, source: str):
    first = training(source=source, profile="test", trigger="operator")
    assert first["promoted"] is True, first["reasons"]
    champion = alias_version(MODEL, CHAMPION)
    assert str(champion.version) == first["version"]
    assert float(champion.tags["threshold"]) == pytest.approx(first["threshold"])
    tags = champion.tags
    assert (tags["data_source"], tags["profile"], tags["overrides"], tags["trigger"]) == (
        source,
        "test",
        "{}",
        "operator",
    )
    assert tags["data_version"] == first["data_version"] and tags["data_path"].startswith("data/raw/")

    run = mlflow.MlflowClient().get_run(first["run_id"])
    for metric in ("test_auc", "test_sensitivity", "test_specificity", "test_precision", "test_f1"):
        assert metric in run.data.metrics
    history_ = mlflow.MlflowClient().get_metric_history(first["run_id"], "val_auc")
    assert len(history_) >= 1 and history_[0].step == 1
    assert run.data.params["train.backbone"] == "small_cnn"
    assert run.data.tags["data_version"] == first["data_version"]
    assert len(run.data.tags["git_commit"]) >= 7 and run.data.tags["started_from"] == "from scratch"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first["run_id"], "plots")}
    assert artifacts == {"plots/learning_curves.png", "plots/roc.png", "plots/confusion_matrix.png"}
    # The int8 graph is exported, checked against the float model, and served only if it passed.
    graphs = {a.path for a in mlflow.MlflowClient().list_artifacts(first["run_id"], "onnx")}
    assert graphs == {ONNX_ARTIFACT, INT8_ARTIFACT}
    metrics = run.data.metrics
    assert 0 <= metrics["int8_agreement"] <= 1 and metrics["int8_max_abs_difference"] >= 0
    drops = [metrics[f"test_{m}"] - metrics[f"int8_test_{m}"] for m in ("auc", "sensitivity", "specificity")]
    passed = metrics["int8_agreement"] >= 0.99 and max(drops) <= 0.01
    assert metrics["int8_served"] == float(passed)
    assert tags[GRAPH_TAG] == (INT8_ARTIFACT if passed else ONNX_ARTIFACT)
    assert "## Serving\nThe int8 graph decided as the float model on" in champion.description
    # The threshold, chosen on the validation split, with its spread over those patients in the card.
    assert (
        "Chosen on other patients of the validation split, the threshold would lie in" in champion.description
    )
    assert (
        0
        <= first["test_sensitivity_at_threshold_ci_high"]
        <= first["test_sensitivity_at_threshold_ci_low"]
        <= 1
    )
    # The model's requirements: pinned to the versions that trained it (none inferred: that cost ~7 s).
    requirements = Path(mlflow.pyfunc.get_model_dependencies(first["model_uri"])).read_text().split()
    assert requirements == model_requirements() and any(r.startswith("tensorflow") for r in requirements)

    # What the operator sees in the Prefect UI: a name that says what ran, the gate, the progress.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(first["flow_run_id"])
        by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        published = client.read_artifacts(artifact_filter=by_run)
    assert flow_run.name.startswith("train test on pneumo-raw/synthetic-test (operator) 20"), flow_run.name
    (gate,) = [a for a in published if a.key == "training-gate"]
    assert gate.data.startswith(f"# Gate: {MODEL} v{first['version']} promoted") and "MLflow run" in gate.data
    progress = {a.description: a.data for a in published if a.type == "progress"}
    assert any(name.startswith("ingest: ") for name in progress) and any(
        name.startswith("train: ") for name in progress
    ), progress
    assert all(value == 100 for value in progress.values()), progress

    # A candidate below an absolute minimum is refused, and nothing moves. It started from the
    # champion's weights (same recipe) and trained only the warm start's epochs.
    warm = {"gate": {"min_test_auc": 1.01}, "train": {"warm_start_epochs": 1}}
    second = training(source=source, profile="test", overrides=warm)
    assert second["promoted"] is False
    warm_run = mlflow.MlflowClient().get_run(second["run_id"])
    assert warm_run.data.tags["started_from"] == f"from champion v{first['version']}'s weights"
    assert len(mlflow.MlflowClient().get_metric_history(second["run_id"], "val_auc")) == 1
    other = load_params("test", {"train": {"warm_start_epochs": 1, "filters": [8, 8]}})
    assert champion_start(other, 64) == (
        None,
        f"from scratch: champion v{first['version']}'s network is not this recipe's",
    )
    assert any("below the minimum" in reason for reason in second["reasons"])
    assert str(alias_version(MODEL, CHAMPION).version) == first["version"]
    refused = mlflow.MlflowClient().get_model_version(MODEL, second["version"])
    assert refused.tags["gate"] == "refused" and refused.tags["gate_champion"] == first["version"]
    # The same source, started by a deployment: compared on both splits, every number recorded.
    decision = mlflow.artifacts.load_dict(f"runs:/{refused.run_id}/{GATE_ARTIFACT}")
    assert decision["judged_on"] == ["candidate's test split", "champion's test split"]
    for split in decision["judged_on"]:
        compared = decision["comparisons"][split]
        assert set(compared["candidate"]) == {"auc", "specificity_at_target"}
        assert compared["size"]["images"] > 10 and len(compared["interval"]["auc"]) == 2

    # The alias REST endpoint the operator uses.
    url = f"{stack.mlflow_uri}/api/2.0/mlflow/registered-models/alias"
    answer = requests.get(url, params={"name": MODEL, "alias": CHAMPION}, timeout=5).json()
    assert answer["model_version"]["version"] == first["version"]

    # Compare-and-set: a promotion gated against another champion is refused.
    with pytest.raises(ChampionMoved, match="gate again"):
        promote.fn(MODEL, second["version"], "stale gate", expected="999")
    assert str(alias_version(MODEL, CHAMPION).version) == first["version"]

    # Promote by hand, then roll back: champion and previous swap back, and the audit trail says why.
    promote.fn(MODEL, second["version"], "integration test", expected=first["version"], by="operator")
    assert str(alias_version(MODEL, PREVIOUS).version) == first["version"]
    assert rollback(MODEL, "bad model") == {"champion": first["version"], "rolled_back": second["version"]}
    assert str(alias_version(MODEL, CHAMPION).version) == first["version"]
    assert alias_version(MODEL, PREVIOUS) is None
    with pytest.raises(RegistryError, match="no @previous"):
        rollback(MODEL, "again")
    events = [(e["version"], e["event"]) for e in history(MODEL)]
    assert events[:3] == [(first["version"], "registered"), (first["version"], "gate"),
                          (first["version"], "promoted")]  # fmt: skip
    assert events[-2:] == [(second["version"], "promoted"), (first["version"], "rolled_back")]
    assert history(MODEL)[-1]["reason"] == "bad model"


def test_a_promotion_cut_short_is_finished_by_the_next_training(stack: Settings, source: str):
    """``champion`` moved, then the process died before ``previous`` moved and before the audit:
    the next training run (here one the gate refuses) finishes the promotion first."""
    client = mlflow.MlflowClient()
    champion = str(alias_version(MODEL, CHAMPION).version)
    other = next(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")
                 if str(v.version) != champion)  # fmt: skip
    # Exactly what promote() has done when it is killed right after the champion moved.
    intent = {"promotion_replaces": champion, "promotion_id": "cutshort0001",
              "promotion_reason": "gate passed", "promotion_by": "gate"}  # fmt: skip
    for key, value in intent.items():
        client.set_model_version_tag(MODEL, other, key, value)
    client.set_registered_model_alias(MODEL, CHAMPION, other)
    assert alias_version(MODEL, PREVIOUS) is None  # half done

    result = run_cli("train", "--data", source, "--profile", "test", "--set", "train.epochs=1",
                     "--set", "gate.min_test_auc=1.01")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["promoted"] is False and "below the minimum" in summary["reasons"][0]
    assert {"model_uri", "version", "test_auc", "test_sensitivity", "judged_on"} <= summary.keys()
    assert "registry repaired: completed the promotion" in result.stdout + result.stderr
    assert str(alias_version(MODEL, CHAMPION).version) == other
    assert str(alias_version(MODEL, PREVIOUS).version) == champion
    (record,) = [e for e in history(MODEL) if e["event"] == "promoted" and e["version"] == other
                 and "after an interruption" in e["reason"]]  # fmt: skip
    assert record["replaced"] == champion
    rollback(MODEL, "restore the original champion")
    assert str(alias_version(MODEL, CHAMPION).version) == champion


def test_a_rollback_cut_short_is_repaired_and_a_second_one_refused(stack: Settings):
    """A rollback killed after moving ``champion`` leaves ``previous`` on the champion itself."""
    client = mlflow.MlflowClient()
    champion = str(alias_version(MODEL, CHAMPION).version)
    client.set_registered_model_alias(MODEL, PREVIOUS, champion)
    with pytest.raises(RegistryError, match=r"no @previous version .*which pointed at the champion"):
        rollback(MODEL, "nothing to go back to")
    assert str(alias_version(MODEL, CHAMPION).version) == champion
    assert alias_version(MODEL, PREVIOUS) is None
    assert history(MODEL)[-1]["event"] == "repaired"


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


def test_cli_promote_rollback_and_history(stack: Settings):
    champion = str(alias_version(MODEL, CHAMPION).version)
    other = next(str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
                 if str(v.version) != champion)  # fmt: skip
    result = run_cli("model", "promote", other, "--reason", "clinical lead asked")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"champion": other, "previous": champion}
    assert run_cli("model", "promote", other, "--reason", "again").returncode == 2  # already champion
    assert run_cli("model", "promote", "999", "--reason", "x").returncode == 2
    assert run_cli("model", "rollback", "--reason", "cli test").returncode == 0
    again = run_cli("model", "rollback")
    assert again.returncode == 2 and "no @previous version" in again.stderr
    lines = run_cli("model", "history").stdout.splitlines()
    assert any(f"v{other}" in line and "promoted" in line and "by hand: clinical lead asked" in line
               for line in lines)  # fmt: skip
    assert "rolled_back" in lines[-1] and "cli test" in lines[-1]
    assert str(alias_version(MODEL, CHAMPION).version) == champion


def test_without_the_registry_lock_nothing_moves_unless_forced(stack: Settings):
    """Prefect unreachable (here: a wrong PREFECT_API_URL, as on an operator's laptop): promote and
    rollback refuse and move nothing; with --force they move, and the audit trail says so."""
    champion = str(alias_version(MODEL, CHAMPION).version)
    other = next(str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL}'")
                 if str(v.version) != champion)  # fmt: skip
    nowhere = {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    for command in (["model", "promote", other, "--reason", "prefect is down"], ["model", "rollback"]):
        refused = run_cli(*command, env=nowhere)
        assert refused.returncode == 2, refused.stderr
        assert "No alias moved" in refused.stderr and "--force" in refused.stderr
        assert str(alias_version(MODEL, CHAMPION).version) == champion
    forced = run_cli("model", "promote", other, "--reason", "emergency", "--force", env=nowhere)
    assert forced.returncode == 0, forced.stderr
    assert str(alias_version(MODEL, CHAMPION).version) == other
    undone = run_cli("model", "rollback", "--reason", "undo the emergency", "--force", env=nowhere)
    assert undone.returncode == 0, undone.stderr
    assert str(alias_version(MODEL, CHAMPION).version) == champion
    promoted, rolled_back = history(MODEL)[-2:]
    assert (promoted["event"], promoted["version"]) == ("promoted", other)
    assert rolled_back["event"] == "rolled_back"
    assert promoted["lock"].startswith("bypassed") and rolled_back["lock"].startswith("bypassed")


def test_a_rollback_killed_after_the_champion_moved_is_recorded_once(stack: Settings):
    """What rollback() has done when killed right after ``champion`` moved: its intent is on the
    version and ``previous`` still points at it. The next registry step removes ``previous`` and
    records the rollback, once; an audit write repeated with its id adds nothing."""
    client = mlflow.MlflowClient()
    champion = str(alias_version(MODEL, CHAMPION).version)
    other = next(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")
                 if str(v.version) != champion)  # fmt: skip
    for key, value in {"rollback_id": "cutshort0002", "rollback_replaces": champion,
                       "rollback_reason": "bad model"}.items():  # fmt: skip
        client.set_model_version_tag(MODEL, other, key, value)
    client.set_registered_model_alias(MODEL, CHAMPION, other)
    client.set_registered_model_alias(MODEL, PREVIOUS, other)
    assert any("recorded the rollback" in line for line in repair(MODEL))
    assert alias_version(MODEL, PREVIOUS) is None and str(alias_version(MODEL, CHAMPION).version) == other
    assert repair(MODEL) == []  # nothing is done twice
    audit(MODEL, other, "rolled_back", "a retried write", event_id="cutshort0002")
    (record,) = [e for e in history(MODEL) if e.get("event_id") == "cutshort0002"]
    assert record["replaced"] == champion and "after an interruption" in record["reason"]
    run_id = client.get_model_version(MODEL, other).run_id
    names = [a.path for a in client.list_artifacts(run_id, "registry/audit")]
    assert len(names) == len(set(names)) and sum("rolled_back-cutshort0002-" in n for n in names) == 1
    promote.fn(MODEL, champion, "restore the original champion", expected=other, by="operator")


GATE_MODEL = "pneumonia-gate-test"


def test_operator_on_a_new_source_is_judged_on_its_own_split_drift_on_both(
    stack: Settings, source: str, tmp_path: Path
):
    overrides = {"registry": {"model_name": GATE_MODEL}}
    first = training(source=source, profile="test", overrides=overrides, trigger="operator")
    assert first["promoted"], first["reasons"]
    folder = tmp_path / "another-clinic"
    generate(folder, n=200, seed=21, size=96, layout="folders")
    other = f"s3://{stack.raw_bucket}/another-clinic"
    upload_dir(s3_client(stack), folder, other)

    operator = training(source=other, profile="test", overrides=overrides, trigger="operator")
    assert operator["judged_on"] == ["candidate's test split"]
    decided = mlflow.artifacts.load_dict(f"runs:/{operator['run_id']}/{GATE_ARTIFACT}")
    assert (
        f"operator's training on a new data source ({other}; champion v{first['version']}"
        in decided["exception"]
    )
    champion = alias_version(GATE_MODEL, CHAMPION)

    # The champion's data must come back from DVC: delete its snapshot first.
    snapshot = workdir() / champion.tags["data_path"]
    shutil.rmtree(snapshot)
    drift = training(source=other, profile="test", overrides=overrides, trigger="drift")
    assert drift["judged_on"] == ["candidate's test split", "champion's test split"], drift["reasons"]
    assert (snapshot / "manifest.csv").exists()  # restored by dvc pull
    decision = mlflow.artifacts.load_dict(f"runs:/{drift['run_id']}/{GATE_ARTIFACT}")
    assert decision["champion"] == str(champion.version)
    assert not any("operator's training" in reason for reason in drift["reasons"])


def test_a_retraining_after_feedback_reads_the_feedback_prefix(stack: Settings, source: str, tmp_path: Path):
    """Monitoring's retraining recipe: the champion's sources plus the confirmed images, each its own
    patient; a new data version, gated against the champion on both splits."""
    champion = alias_version(MODEL, CHAMPION)
    recipe = Recipe.from_tags(champion.tags)
    feedback = f"s3://{stack.raw_bucket}/feedback-flow-test"
    assert retraining_parameters.fn(recipe, feedback)["source"] == recipe.source  # nothing confirmed yet
    folder = tmp_path / "confirmed"
    generate(folder, n=24, seed=31, size=96, layout="folders")
    for path in sorted(folder.rglob("*.png")):  # as the service names them: the request id
        path.rename(path.with_name(f"{uuid.uuid4()}.png"))
    upload_dir(s3_client(stack), folder, feedback)
    parameters = retraining_parameters.fn(recipe, feedback)
    assert parameters == {**recipe.deployment_parameters("drift"), "source": f"{recipe.source},{feedback}"}

    retrained = training(**parameters)
    assert retrained["data_version"] != champion.tags["data_version"]
    assert retrained["judged_on"] == ["candidate's test split", "champion's test split"], retrained["reasons"]
    snapshot = (
        workdir() / mlflow.MlflowClient().get_model_version(MODEL, retrained["version"]).tags["data_path"]
    )
    assert (snapshot / SOURCES_FILE).read_text().split() == [
        "00-pneumo-raw-synthetic-test",
        "01-pneumo-raw-feedback-flow-test",
    ]
    assert len(list((snapshot / "01-pneumo-raw-feedback-flow-test").rglob("*.png"))) == 24
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(retrained["flow_run_id"]).name
    assert "pneumo-raw/synthetic-test + pneumo-raw/feedback-flow-test (drift)" in name
