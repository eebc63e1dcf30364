"""pneumo.tasks.gate_report: the training-gate artifact an operator reads (no servers)."""

from __future__ import annotations

from pneumo.contract import GateDecision
from pneumo.tasks.gate_report import gate_markdown

LINKS = {"run": "http://mlflow/#/experiments/1/runs/abc", "version": "http://mlflow/#/models/m/versions/4",
         "champion": "http://mlflow/#/models/m/versions/3"}  # fmt: skip
RESULTS = {
    "threshold": 0.2986,
    **{"test_auc": 0.991, "test_auc_ci_low": 0.97, "test_auc_ci_high": 1.0},
    **{"test_sensitivity": 1.0, "test_sensitivity_ci_low": 1.0, "test_sensitivity_ci_high": 1.0},
    **{"test_specificity": 0.8, "test_specificity_ci_low": 0.7, "test_specificity_ci_high": 0.9},
}
COMPARED = {"candidate": {"auc": 0.99, "specificity_at_target": 0.8},
            "champion": {"auc": 0.95, "specificity_at_target": 0.7},
            "difference": {"auc": 0.04, "specificity_at_target": 0.1},
            "interval": {"auc": [0.01, 0.07], "specificity_at_target": [-0.02, 0.2]},
            "size": {"images": 56, "positives": 21, "patients": 56}}  # fmt: skip


def test_a_promotion_shows_both_models_on_every_split_with_links():
    decision = GateDecision(True, ["meets the minimums"], "3", {"candidate's test split": COMPARED,
                            "champion's test split": {"unavailable": "data version gone"}})  # fmt: skip
    text = gate_markdown("m", "4", decision, RESULTS, {"champion_threshold": 0.4643}, LINKS)
    assert text.startswith("# Gate: m v4 promoted")
    assert f"[MLflow run]({LINKS['run']})" in text and f"[v3]({LINKS['champion']})" in text
    assert "threshold 0.2986" in text and "threshold 0.464" in text
    assert "| auc | 0.991 | 0.970 to 1.000 |" in text
    assert "| candidate's test split | 56 | AUC | 0.990 | 0.950 | +0.040 (0.010 to 0.070) |" in text
    assert "| champion's test split | - | unavailable: data version gone |" in text


def test_a_first_model_and_a_refusal_say_so():
    first = gate_markdown("m", "1", GateDecision(True, ["first model"]), RESULTS, {}, LINKS)
    assert "- no champion yet" in first and "Candidate vs champion" not in first
    refused = GateDecision(
        False, ["test_auc 0.5 is below the minimum 0.8"], "3", exception="operator's new source"
    )
    text = gate_markdown("m", "5", refused, RESULTS, {"champion_threshold": None}, LINKS)
    assert text.startswith("# Gate: m v5 refused") and "- test_auc 0.5 is below the minimum 0.8" in text
    assert "threshold n/a" in text and "Note: operator's new source" in text
