"""pneumo stage ...: the DVC stages run the flow file's own steps, in dvc.yaml's order, on the real
stack, and the model they make goes through the same gate into the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from pneumo.config import ROOT, Settings, workdir
from pneumo.contract import CHAMPION
from pneumo.models import alias_version

pytestmark = pytest.mark.integration
MODEL = "pneumonia-stages-test"


def test_the_dvc_stages_train_and_promote_through_the_gate(stack: Settings, source: str):
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["ingest", "preprocess", "train", "promote"]
    for name, stage in stages.items():
        command = stage["cmd"].replace("${dvc.source}", source).replace("${dvc.profile}", "test").split()
        # The test profile's own epochs: fewer once left a model at chance on another machine's CPU.
        extra = [] if name == "ingest" else ["--set", f"registry.model_name={MODEL}"]
        result = run_cli(*command[1:], *extra)
        assert result.returncode == 0, f"stage {name}: {result.stderr[-3000:]}"

    root = workdir()
    assert (root / "data" / "raw" / "pipeline" / "manifest.csv").exists()
    assert (root / "data" / "processed" / "pipeline" / "summary.json").exists()
    assert any(Path(root / "models" / "pipeline").rglob("MLmodel"))
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert 0 <= metrics["test_auc"] <= 1 and 0 < metrics["threshold"] < 1
    promotion = json.loads((root / "reports" / "promotion.json").read_text())
    assert promotion["promoted"] is True, promotion["reasons"]  # the first version: the minimums only
    champion = alias_version(MODEL, CHAMPION)
    assert str(champion.version) == promotion["version"]
    assert champion.tags["data_path"] == "data/raw/pipeline" and champion.tags["profile"] == "test"
