"""Metrics of a binary classifier, and the paired comparison of two models on the same images.

Pure NumPy: used by evaluation, the cross-validated threshold, the gate and ``pneumo evaluate``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy.stats import rankdata


def choose_threshold(y: np.ndarray, p: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold whose sensitivity on ``(y, p)`` is at least the target."""
    positives = np.sort(p[y == 1])[::-1]
    if len(positives) == 0:
        raise ValueError("cannot choose a threshold without positive examples")
    needed = math.ceil(target_sensitivity * len(positives))
    return float(positives[max(needed, 1) - 1])


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC and the confusion-matrix metrics of predictions ``p >= threshold``."""
    predicted = (p >= threshold).astype(int)
    tp = int(((predicted == 1) & (y == 1)).sum())
    tn = int(((predicted == 0) & (y == 0)).sum())
    fp = int(((predicted == 1) & (y == 0)).sum())
    fn = int(((predicted == 0) & (y == 1)).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    precision, sensitivity = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "auc": auc(y, p),
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "precision": precision,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": ratio(tp + tn, len(y)),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


REPORTED = ("auc", "sensitivity", "specificity", "precision", "f1", "accuracy")


def bootstrap_intervals(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile bootstrap intervals of the :data:`REPORTED` metrics at ``threshold``.

    Args:
        y: labels (1 = pneumonia).
        p: probabilities.
        threshold: the decision threshold.
        groups: a patient id per image; patients, not images, are resampled (images of one patient
            are not independent). None resamples images.
        resamples: bootstrap resamples.
        seed: random seed, so the intervals repeat.
    """
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    draws: dict[str, list[float]] = {name: [] for name in REPORTED}
    for rows in patient_resamples(y, groups, resamples, seed):
        metrics = binary_metrics(y[rows], p[rows], threshold)
        for name in REPORTED:
            draws[name].append(metrics[name])
    return {name: interval(values) for name, values in draws.items()}


def threshold_spread(
    y: np.ndarray,
    p: np.ndarray,
    target_sensitivity: float,
    groups: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """How far :func:`choose_threshold` moves with the patients it is chosen on: its patient-bootstrap
    ``threshold_sd`` and 95% interval (``threshold_ci_low``, ``threshold_ci_high``).

    A validation split of a few dozen positives puts the threshold at about the second-lowest
    positive score, and the interval is wide; several hundred patients pin it down.
    """
    draws = [
        choose_threshold(y[rows], p[rows], target_sensitivity)
        for rows in patient_resamples(y, groups, resamples, seed)
    ]
    low, high = interval(draws)
    return {
        "threshold_sd": float(np.std(draws)) if draws else math.nan,
        "threshold_ci_low": low,
        "threshold_ci_high": high,
    }


def patient_resamples(y: np.ndarray, groups: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of bootstrap resamples of patients: all images of a drawn patient together.

    Resamples that hold one class only are skipped (no AUC, no sensitivity).
    """
    unique, members = np.unique(np.asarray(groups), return_inverse=True)
    rows_of = [np.flatnonzero(members == g) for g in range(len(unique))]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        rows = np.concatenate([rows_of[g] for g in rng.integers(0, len(unique), len(unique))])
        if len(np.unique(y[rows])) == 2:
            yield rows


def interval(values: list[float]) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap values (NaN, NaN without any)."""
    if not values:
        return math.nan, math.nan
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def specificity_at_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """Specificity at the highest threshold that reaches ``target`` sensitivity on these images.

    Two models compared this way work at the same sensitivity on the same images, whatever
    threshold each of them stores: a matched operating point.
    """
    threshold = choose_threshold(y, p, target)
    negatives = p[y == 0]
    return float((negatives < threshold).mean()) if len(negatives) else math.nan


COMPARED = ("auc", "specificity_at_target")
COMPARED_LABELS = {"auc": "AUC", "specificity_at_target": "specificity at the target sensitivity"}


def _compared(y: np.ndarray, p: np.ndarray, target: float) -> dict[str, float]:
    return {"auc": auc(y, p), "specificity_at_target": specificity_at_sensitivity(y, p, target)}


def paired_comparison(
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    groups: np.ndarray,
    target_sensitivity: float,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float | list[float]]]:
    """Candidate vs champion on the same images: :data:`COMPARED` metrics and their differences.

    The 95% intervals of the differences (candidate minus champion) come from a paired bootstrap
    over patients: each resample draws patients with replacement and scores both models on the
    same images, so the noise the two models share cancels out.

    Args:
        y: labels (1 = pneumonia).
        candidate: the candidate's probabilities.
        champion: the champion's probabilities for the same images.
        groups: a patient id per image.
        target_sensitivity: the sensitivity of the matched operating point.
        resamples: bootstrap resamples.
        seed: random seed, so the intervals repeat.

    Returns:
        ``candidate``, ``champion`` and ``difference`` (name -> value), ``interval`` (name ->
        [low, high] of the difference) and ``size`` (images, positives, patients).
    """
    ours, theirs = _compared(y, candidate, target_sensitivity), _compared(y, champion, target_sensitivity)
    draws: dict[str, list[float]] = {name: [] for name in COMPARED}
    for rows in patient_resamples(y, groups, resamples, seed):
        a = _compared(y[rows], candidate[rows], target_sensitivity)
        b = _compared(y[rows], champion[rows], target_sensitivity)
        for name in COMPARED:
            draws[name].append(a[name] - b[name])
    return {
        "candidate": ours,
        "champion": theirs,
        "difference": {name: ours[name] - theirs[name] for name in COMPARED},
        "interval": {name: list(interval(values)) for name, values in draws.items()},
        "size": {"images": len(y), "positives": int(y.sum()), "patients": len(np.unique(np.asarray(groups)))},
    }
