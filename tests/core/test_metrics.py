"""pneumo.metrics: thresholds, metrics, patient bootstrap intervals and the paired comparison."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.metrics import (
    REPORTED,
    binary_metrics,
    bootstrap_intervals,
    choose_threshold,
    paired_comparison,
    specificity_at_sensitivity,
)


def test_threshold_meets_target_sensitivity():
    y = np.array([1] * 20 + [0] * 20)
    p = np.concatenate([np.linspace(0.3, 1.0, 20), np.linspace(0.0, 0.6, 20)])
    threshold = choose_threshold(y, p, 0.95)
    assert binary_metrics(y, p, threshold)["sensitivity"] >= 0.95
    assert binary_metrics(y, p, threshold + 1e-6)["sensitivity"] < 0.95  # the highest such


def test_binary_metrics_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3])
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(5 / 7)


def test_bootstrap_intervals_contain_the_estimate_and_repeat():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 100)
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, 200), 0, 1)
    point = binary_metrics(y, p, 0.5)
    intervals = bootstrap_intervals(y, p, 0.5, resamples=300)
    assert set(intervals) == set(REPORTED)
    for name, (low, high) in intervals.items():
        assert low <= point[name] <= high and high - low < 0.3
    assert bootstrap_intervals(y, p, 0.5, resamples=300) == intervals


def test_bootstrap_resamples_patients_not_images():
    # 20 patients with 10 identical images each: only 20 independent observations.
    rng = np.random.default_rng(1)
    y_patient = np.array([0, 1] * 10)
    p_patient = np.clip(y_patient * 0.3 + rng.uniform(0, 0.7, 20), 0, 1)
    y, p = np.repeat(y_patient, 10), np.repeat(p_patient, 10)
    patients = np.repeat(np.arange(20), 10)
    by_image = bootstrap_intervals(y, p, 0.5, resamples=300)
    by_patient = bootstrap_intervals(y, p, 0.5, patients, resamples=300)
    for name in ("auc", "sensitivity", "specificity"):
        width = {k: v[name][1] - v[name][0] for k, v in (("image", by_image), ("patient", by_patient))}
        assert width["patient"] > 2 * width["image"], name


def _set(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    return y, np.arange(n).astype(str), rng


def test_matched_operating_point_ignores_each_models_own_threshold():
    y, _, rng = _set()
    good = np.where(y == 1, rng.uniform(0.5, 1, len(y)), rng.uniform(0, 0.6, len(y)))
    # The same ranking squeezed near 1: at its own threshold of 0.5 it calls everything positive.
    everything_positive = 0.9 + good / 10
    assert specificity_at_sensitivity(y, good, 0.95) == pytest.approx(
        specificity_at_sensitivity(y, everything_positive, 0.95)
    )
    # ... while at its own threshold of 0.5 it has no specificity at all.
    assert binary_metrics(y, everything_positive, 0.5)["specificity"] == 0.0
    assert binary_metrics(y, good, 0.5)["specificity"] > 0.5


def test_paired_comparison_of_a_model_with_itself_is_exactly_zero():
    y, patients, rng = _set()
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, len(y)), 0, 1)
    result = paired_comparison(y, p, p, patients, 0.95, resamples=200)
    assert result["difference"] == {"auc": 0.0, "specificity_at_target": 0.0}
    assert result["interval"]["auc"] == [0.0, 0.0]
    assert result["size"] == {"images": 200, "positives": 100, "patients": 200}


def test_paired_comparison_finds_the_better_model_with_an_interval_above_zero():
    y, patients, rng = _set(400)
    noise = rng.normal(0, 1, len(y))
    better, worse = y * 2.0 + noise, y * 0.7 + noise + rng.normal(0, 1, len(y))
    result = paired_comparison(y, better, worse, patients, 0.95, resamples=300)
    assert result["difference"]["auc"] > 0.1
    low, high = result["interval"]["auc"]
    assert 0 < low < result["difference"]["auc"] < high


def test_patients_are_resampled_together():
    y = np.array([1, 1, 0, 0] * 10)
    patients = np.repeat(np.arange(20), 2).astype(str)  # two images per patient
    result = paired_comparison(y, np.linspace(0, 1, 40), np.linspace(1, 0, 40), patients, 0.95, 100)
    assert result["size"]["patients"] == 20
