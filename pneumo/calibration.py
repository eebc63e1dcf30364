"""Operating points that hold at a new site: a site's own threshold, and calibrated probabilities.

A model's ranking travels between hospitals better than its threshold does: another scanner or
export pipeline shifts every score a little, and the threshold chosen at home no longer meets the
target sensitivity, or costs far more false alarms than it should. ``pneumo calibrate`` chooses a
site's threshold on a small labelled sample of that site's images (:func:`calibrate_threshold`);
``benchmarks/quality.py`` measures how well that works (:func:`site_calibration_draws`) and whether
Platt scaling makes the probabilities mean what they say (:func:`fit_platt`; applied by
:func:`pneumo.contract.platt`, as the version's tags define it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta
from sklearn.linear_model import LogisticRegression

from pneumo.contract import logit
from pneumo.metrics import binary_metrics, choose_threshold


class SampleTooSmall(ValueError):
    """Too few positives to show, at the asked confidence, that the target sensitivity is met."""

    def __init__(self, positives: int, needed: int, target: float, confidence: float) -> None:
        self.positives, self.needed = positives, needed
        super().__init__(
            f"{positives} patients with pneumonia cannot show sensitivity >= {target} with "
            f"{confidence:.0%} confidence, even if every one is caught: label pneumonia cases of at "
            f"least {needed} different patients of the site (more images of the same patients do "
            "not help), or lower --confidence or --target-sensitivity"
        )


def sensitivity_lower_bound(detected: float, positives: float, confidence: float) -> float:
    """One-sided exact (Clopper-Pearson) lower confidence bound of the sensitivity ``detected/positives``."""
    if detected <= 0:
        return 0.0
    return float(beta.ppf(1 - confidence, detected, positives - detected + 1))


def positives_needed(target: float, confidence: float) -> int:
    """The fewest positives for which catching every one shows sensitivity >= ``target``."""
    return math.ceil(math.log(1 - confidence) / math.log(target))


def calibrate_threshold(
    y: np.ndarray,
    p: np.ndarray,
    target: float,
    confidence: float | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, float | None]:
    """A site's threshold from a labelled sample of its own images.

    Without ``confidence`` this is :func:`pneumo.metrics.choose_threshold`: the sensitivity on the
    sample meets the target. With it, the highest threshold whose one-sided *lower confidence
    bound* of sensitivity (exact binomial) meets the target, so the smaller the sample, the fewer
    misses it allows. With ``groups`` the bound counts patients, not images (images of one patient
    are not independent evidence): a patient counts as caught only when all of its pneumonia
    images are.

    Returns:
        The threshold, and the lower bound it reaches (None without ``confidence``).

    Raises:
        SampleTooSmall: even catching every positive does not show the target at that confidence.
        ValueError: the sample has no positives.
    """
    if confidence is None:
        return choose_threshold(y, p, target), None
    if not (y == 1).any():
        raise ValueError("cannot choose a threshold without positive examples")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    patients = pd.Series(p[y == 1]).groupby(groups[y == 1]).min()  # a patient's weakest pneumonia image
    scores = np.sort(patients.to_numpy())[::-1]
    chosen = None
    for caught in range(len(scores), 0, -1):  # one more missed patient per step
        bound = sensitivity_lower_bound(caught, len(scores), confidence)
        if bound < target:
            break
        chosen = (float(scores[caught - 1]), bound)
    if chosen is None:
        raise SampleTooSmall(len(scores), positives_needed(target, confidence), target, confidence)
    return chosen


def patient_sample(groups: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random mask of whole patients holding at least ``size`` images."""
    unique, members = np.unique(np.asarray(groups), return_inverse=True)
    counts = np.bincount(members)
    order = rng.permutation(len(unique))
    taken = order[: int(np.searchsorted(np.cumsum(counts[order]), size)) + 1]
    return np.isin(members, taken)


def site_calibration_draws(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    target: float,
    sample: int = 100,
    draws: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """What a site calibration achieves: calibrate on ``sample`` images, measure on the rest.

    Each draw takes random patients until ``sample`` images, chooses the threshold on them
    (:func:`calibrate_threshold`) and scores every other image at it.

    Returns:
        ``sensitivity`` and ``specificity`` (each ``mean``, ``sd``, ``min``, ``values``) and
        the ``thresholds`` of the draws.
    """
    rng = np.random.default_rng(seed)
    results: dict[str, list[float]] = {"sensitivity": [], "specificity": [], "thresholds": []}
    for _ in range(draws):
        chosen = patient_sample(groups, sample, rng)
        threshold, _ = calibrate_threshold(y[chosen], p[chosen], target)
        metrics = binary_metrics(y[~chosen], p[~chosen], threshold)
        results["thresholds"].append(threshold)
        for name in ("sensitivity", "specificity"):
            results[name].append(metrics[name])
    summary: dict[str, Any] = {"thresholds": results["thresholds"]}
    for name in ("sensitivity", "specificity"):
        values = np.array(results[name])
        summary[name] = {"mean": float(values.mean()), "sd": float(values.std()), "min": float(values.min()),
                         "values": [round(float(v), 4) for v in values]}  # fmt: skip
    return summary


def fit_platt(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Platt scaling ``sigmoid(a * logit(p) + b)`` fitted by logistic regression on ``(y, p)``.

    Mild L2 regularisation (C=1) keeps ``a`` finite when the classes are separable, as a small
    validation split often is.
    """
    model = LogisticRegression(C=1.0).fit(logit(p).reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities: lower is better calibrated (and sharper)."""
    return float(np.mean((np.asarray(p, float) - y) ** 2))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over ``bins`` equal-width bins, weighted by size."""
    edges = np.minimum((np.asarray(p, float) * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(edges):
        rows = edges == b
        error += rows.mean() * abs(y[rows].mean() - p[rows].mean())
    return float(error)
