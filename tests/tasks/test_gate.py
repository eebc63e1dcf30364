"""pneumo.tasks.gate: the gate's decisions (no servers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pneumo.config import load_params
from pneumo.contract import Recipe
from pneumo.metrics import paired_comparison
from pneumo.tasks.gate import CHAMPION_SPLIT, OWN_SPLIT, decide, judged_alone, unseen

GATE = load_params()["gate"]


GOOD = {"test_auc": 0.95, "test_sensitivity": 0.96, "test_specificity": 0.80}


def _comparison(candidate: dict, champion: dict, split: str = OWN_SPLIT, interval=(-0.1, 0.1)) -> dict:
    return {
        "champion": "3",
        "exception": None,
        "splits": {
            split: {
                "candidate": candidate,
                "champion": champion,
                "difference": {k: candidate[k] - champion[k] for k in candidate},
                "interval": {k: list(interval) for k in candidate},
                "size": {"images": 70, "positives": 35, "patients": 70},
            }
        },
    }


SAME = {"auc": 0.95, "specificity_at_target": 0.80}


def test_first_model_needs_only_the_minimums():
    decision = decide(GOOD, {"champion": None, "splits": {}, "exception": None}, GATE)
    assert decision.promote and "first model" in decision.reasons[0]
    refused = decide({**GOOD, "test_auc": float("nan")}, {"champion": None, "splits": {}}, GATE)
    assert not refused.promote and "test_auc" in refused.reasons[0]


def test_within_tolerance_on_every_split_promotes():
    comparison = _comparison({"auc": 0.94, "specificity_at_target": 0.78}, SAME)
    comparison["splits"][CHAMPION_SPLIT] = comparison["splits"][OWN_SPLIT]
    decision = decide(GOOD, comparison, GATE)
    assert decision.promote, decision.reasons
    assert decision.champion == "3" and decision.judged_on == [OWN_SPLIT, CHAMPION_SPLIT]


def test_worse_at_the_matched_operating_point_is_refused_with_its_numbers():
    comparison = _comparison({"auc": 0.95, "specificity_at_target": 0.60}, SAME, CHAMPION_SPLIT)
    decision = decide(GOOD, comparison, GATE)
    assert not decision.promote
    reason = decision.reasons[0]
    assert "champion's test split" in reason and "specificity at the target sensitivity 0.600" in reason
    assert "champion v3's 0.800" in reason and "95% interval" in reason


def _scores(n: int = 120, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    good = np.clip(np.where(y == 1, rng.normal(0.8, 0.1, n), rng.normal(0.2, 0.1, n)), 0, 1)
    return y, good, np.arange(n).astype(str)


def test_a_champion_that_calls_everything_positive_does_not_block():
    """The measured case: a real-X-ray candidate against the synthetic demo champion, which calls
    nearly every real film positive (and would win on sensitivity at its own threshold)."""
    y, good, patients = _scores()
    demo = np.full(len(y), 0.97) + np.random.default_rng(0).normal(0, 0.01, len(y))
    comparison = {"champion": "1", "exception": None,
                  "splits": {OWN_SPLIT: paired_comparison(y, good, demo, patients, 0.95, 200)}}  # fmt: skip
    candidate = {"test_auc": 0.990, "test_sensitivity": 0.944, "test_specificity": 0.971}
    decision = decide(candidate, comparison, GATE)
    assert decision.promote, decision.reasons


def test_a_candidate_that_calls_everything_positive_does_not_pass():
    y, good, patients = _scores()
    everything = np.full(len(y), 0.99)
    compared = paired_comparison(y, everything, good, patients, 0.95, 200)
    comparison = {"champion": "3", "exception": None, "splits": {OWN_SPLIT: compared}}
    as_trained = {"test_auc": 0.5, "test_sensitivity": 1.0, "test_specificity": 0.0}
    decision = decide(as_trained, comparison, GATE)
    assert not decision.promote
    assert any("test_specificity 0.000 is below" in r for r in decision.reasons)
    assert any("AUC 0.500 is worse than champion v3" in r for r in decision.reasons)
    # Even with minimums it could meet, the comparison on the same images refuses it.
    decision = decide(GOOD, comparison, GATE)
    assert not decision.promote and "specificity at the target sensitivity 0.000" in decision.reasons[-1]


def test_an_unavailable_champion_split_refuses():
    comparison = _comparison(SAME, SAME)
    comparison["splits"][CHAMPION_SPLIT] = {"unavailable": "v3 does not record its data version"}
    decision = decide(GOOD, comparison, GATE)
    assert not decision.promote and "cannot compare on the champion's test split" in decision.reasons[0]


def test_the_operator_exception_is_said_in_the_decision():
    comparison = _comparison(SAME, SAME)
    comparison["exception"] = "judged on the candidate's test split only: an operator's training on a new"
    decision = decide(GOOD, comparison, GATE)
    assert decision.promote and decision.judged_on == [OWN_SPLIT]
    assert "operator's training on a new" in decision.reasons[-1] and decision.exception


def test_only_an_operator_on_a_new_source_is_judged_alone():
    champion = Recipe("s3://pneumo-raw/synthetic", "demo", {}, "operator")
    for trigger in ("drift", "deployment"):
        assert judged_alone(Recipe("s3://pneumo-raw/cxr", "xray", {}, trigger), champion, "1") is None
    assert judged_alone(Recipe("s3://pneumo-raw/synthetic", "test", {}, "operator"), champion, "1") is None
    reason = judged_alone(Recipe("s3://pneumo-raw/cxr", "xray", {}, "operator"), champion, "1")
    assert (
        "s3://pneumo-raw/cxr" in reason and "champion v1 was trained on s3://pneumo-raw/synthetic" in reason
    )
    assert "an unrecorded source" in judged_alone(Recipe("s3://x/y", "xray", {}, "operator"), None, "1")


def test_unseen_leaves_out_images_and_patients_the_candidate_trained_on(tmp_path: Path):
    files = {}
    for name, content in {"a": b"1", "b": b"2", "c": b"3", "copy_of_a": b"1"}.items():
        files[name] = tmp_path / name
        files[name].write_bytes(content)
    test = pd.DataFrame({"path": [str(files[n]) for n in "abc"], "patient_id": ["p1", "p2", "p3"],
                         "label": [1, 0, 1]})  # fmt: skip
    seen = pd.DataFrame({"path": [str(files["copy_of_a"])], "patient_id": ["p2"], "label": [1]})
    assert list(unseen(test, seen, same_source=False)["patient_id"]) == ["p2", "p3"]  # same bytes as a
    assert list(unseen(test, seen, same_source=True)["patient_id"]) == ["p3"]  # and patient p2
