"""pneumo.calibration: a site's threshold from a small labelled sample, and calibrated probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pneumo.calibration import (
    SampleTooSmall,
    brier,
    calibrate_threshold,
    expected_calibration_error,
    fit_platt,
    patient_sample,
    positives_needed,
    sensitivity_lower_bound,
    site_calibration_draws,
)
from pneumo.contract import platt
from pneumo.metrics import binary_metrics, choose_threshold


def _site(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a model that ranks well (AUC ~0.97) but whose scores a site's pipeline shifts."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    logit = np.where(y == 1, rng.normal(1.5, 1.0, n), rng.normal(-1.5, 1.0, n)) + shift
    return y, 1 / (1 + np.exp(-logit))


def test_the_exact_bound_is_clopper_pearson():
    # every one of n caught: the one-sided bound is (1 - confidence) ** (1 / n)
    assert sensitivity_lower_bound(30, 30, 0.95) == pytest.approx(0.05 ** (1 / 30))
    assert sensitivity_lower_bound(0, 30, 0.95) == 0.0
    assert sensitivity_lower_bound(45, 50, 0.95) < 45 / 50 < sensitivity_lower_bound(45, 50, 0.5) + 0.02
    assert positives_needed(0.95, 0.95) == 59 and positives_needed(0.90, 0.95) == 29
    assert 0.05 ** (1 / 59) >= 0.95 > 0.05 ** (1 / 58)


def test_without_confidence_the_estimate_meets_the_target():
    y, p = _site(200, 0.0, 1)
    threshold, bound = calibrate_threshold(y, p, 0.95)
    assert bound is None and threshold == choose_threshold(y, p, 0.95)
    assert binary_metrics(y, p, threshold)["sensitivity"] >= 0.95


def test_with_confidence_the_lower_bound_meets_the_target_and_costs_specificity():
    y, p = _site(400, 0.0, 2)  # 200 positives: enough to allow a few misses
    estimate, _ = calibrate_threshold(y, p, 0.95)
    threshold, bound = calibrate_threshold(y, p, 0.95, confidence=0.95)
    caught = int((p[y == 1] >= threshold).sum())
    assert bound >= 0.95 and sensitivity_lower_bound(caught, 200, 0.95) >= 0.95
    assert sensitivity_lower_bound(caught - 1, 200, 0.95) < 0.95  # the highest such threshold
    assert threshold < estimate  # the bound asks for fewer misses than the estimate
    metrics = binary_metrics(y, p, threshold)
    assert (
        metrics["sensitivity"] > 0.95
        and metrics["specificity"] < binary_metrics(y, p, estimate)["specificity"]
    )


def test_a_sample_too_small_for_the_confidence_is_refused_with_what_it_needs():
    y, p = _site(100, 0.0, 3)  # 50 positives < 59
    with pytest.raises(SampleTooSmall) as refused:
        calibrate_threshold(y, p, 0.95, confidence=0.95)
    assert refused.value.positives == 50 and refused.value.needed == 59
    assert "at least 59" in str(refused.value)
    y, p = _site(140, 0.0, 3)  # 70 positive images, but two per patient: 35 patients
    groups = np.arange(140) // 4 * 2 + y  # each patient: two images of one class
    with pytest.raises(SampleTooSmall) as refused:
        calibrate_threshold(y, p, 0.95, confidence=0.95, groups=groups)
    assert refused.value.positives == 35 and "35 patients with pneumonia" in str(refused.value)
    with pytest.raises(ValueError, match="without positive"):
        calibrate_threshold(np.zeros(10, int), np.linspace(0, 1, 10), 0.95, confidence=0.95)


def test_a_site_threshold_holds_where_the_home_threshold_does_not():
    """The issue's case: the home threshold, taken to a site whose pipeline shifts the scores, costs
    specificity; 100 of the site's own images recover the operating point."""
    y_home, p_home = _site(400, 0.0, 4)
    home = choose_threshold(y_home, p_home, 0.95)
    y, p = _site(600, 2.0, 5)  # another site: every score pushed up
    at_home_threshold = binary_metrics(y, p, home)
    draws = site_calibration_draws(y, p, np.arange(len(y)), 0.95, sample=100, draws=20, seed=0)
    assert at_home_threshold["specificity"] < 0.6
    assert draws["sensitivity"]["mean"] >= 0.92 and draws["specificity"]["mean"] > 0.8
    assert draws["specificity"]["mean"] > at_home_threshold["specificity"] + 0.2
    assert len(draws["thresholds"]) == 20 and len(set(draws["thresholds"])) > 1  # 20 different samples


def test_by_patient_a_patient_is_caught_only_with_all_its_pneumonia_images():
    y, p = _site(480, 0.0, 8)  # 240 positive images
    groups = np.arange(480) // 4 * 2 + y  # two images per patient: 120 patients with pneumonia
    threshold, bound = calibrate_threshold(y, p, 0.95, confidence=0.95, groups=groups)
    positives = y == 1
    weakest = {g: p[positives & (groups == g)].min() for g in np.unique(groups[positives])}
    caught = sum(score >= threshold for score in weakest.values())
    assert bound == pytest.approx(sensitivity_lower_bound(caught, 120, 0.95)) and bound >= 0.95
    assert sensitivity_lower_bound(caught - 1, 120, 0.95) < 0.95
    assert threshold in set(weakest.values())


def test_patient_samples_keep_patients_whole():
    groups = np.repeat(np.arange(50), 3)
    chosen = patient_sample(groups, 100, np.random.default_rng(0))
    assert 100 <= chosen.sum() < 103
    for patient in np.unique(groups):
        assert len(set(chosen[groups == patient])) == 1


def test_platt_scaling_calibrates_overconfident_scores():
    y, p = _site(2000, 0.0, 6)  # the calibrated logit is 3x the score's: a sigmoid of 9x is over-confident
    sharp = 1 / (1 + np.exp(-3 * np.log(p / (1 - p))))
    a, b = fit_platt(y, sharp)
    assert a == pytest.approx(1.0, abs=0.1) and abs(b) < 0.15  # sigmoid(3x) is the true posterior
    y, p = _site(2000, 0.0, 7)
    sharp = 1 / (1 + np.exp(-9 * np.log(p / (1 - p))))
    a, b = fit_platt(y, sharp)
    assert a == pytest.approx(1 / 3, abs=0.05) and abs(b) < 0.15
    calibrated = platt(sharp, a, b)
    assert brier(y, calibrated) < brier(y, sharp)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, sharp)
    order = np.argsort(sharp)
    assert np.all(np.diff(calibrated[order]) >= 0)  # monotone: the same decisions at a mapped threshold
    assert not math.isnan(expected_calibration_error(y, calibrated))
