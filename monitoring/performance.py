"""Live performance: the served model measured on the predictions clinicians have since confirmed.

Drift says the inputs changed; this says whether the answers got worse. For the labelled records of
a window: AUC, and sensitivity and specificity at the threshold the service decided with, each with
a 95% bootstrap interval (every image its own patient: production records carry no patient id),
next to the champion's metrics on its test split. A drop beyond ``monitoring.max_performance_drop``
on any of them, with at least ``monitoring.min_labelled`` labels in all and half that many of the
class the metric is measured on (both classes for AUC), is a reason to retrain, taken through the
same path and cooldown as drift.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pneumo.metrics import auc, binary_metrics, bootstrap_intervals, interval
from pneumo.monitoring.records import LABELS
from pneumo.monitoring.wording import describe_site

MEASURED = ("auc", "sensitivity", "specificity")


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def live_performance(
    records: pd.DataFrame,
    champion: dict[str, float],
    config: dict[str, Any],
    resamples: int = 1000,
    sites: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Measure the labelled records and compare them with the champion's test metrics.

    Args:
        records: the window's records (``probability``, ``threshold``, ``site``, ``confirmed_label``).
        champion: the champion's ``test_auc``, ``test_sensitivity``, ``test_specificity`` (its tags).
        config: the ``monitoring`` section of params.yaml.
        resamples: bootstrap resamples for the intervals.
        sites: the target sensitivity of each site calibrated on the champion (``pneumo calibrate``).

    Returns:
        ``labelled``, ``positives``, the :data:`MEASURED` metrics with ``intervals``, ``threshold``,
        ``champion`` (its test metrics), ``drops`` (champion minus live), ``degraded``: the reason
        to retrain, or None, and ``sites``: whether each site's threshold still meets its target
        (:func:`site_checks`).
    """
    labelled = (
        records[records.get("confirmed_label", pd.Series(dtype=object)).isin(LABELS)]
        if len(records)
        else records
    )
    result: dict[str, Any] = {"labelled": len(labelled), "minimum": config["min_labelled"], "degraded": None}
    result["champion"] = {m: champion.get(f"test_{m}") for m in MEASURED}
    if labelled.empty:
        return result
    y = (labelled["confirmed_label"] == LABELS[1]).to_numpy(int)
    p, thresholds = labelled["probability"].to_numpy(float), labelled["threshold"].to_numpy(float)
    # Each record as it was decided: a site's threshold, or a recalibration, may change it mid-window.
    decided = (p >= thresholds).astype(float)
    result.update(positives=int(y.sum()), threshold=round(float(thresholds[-1]), 6))
    result["thresholds"] = sorted({round(float(t), 6) for t in thresholds})
    result["sites"] = site_checks(labelled, y, decided, sites or {}, config["min_labelled"] // 2, resamples)
    if len(np.unique(y)) < 2:
        result["note"] = "the confirmed labels hold one class only: no AUC, sensitivity or specificity yet"
        return result
    metrics = {**binary_metrics(y, decided, 0.5), "auc": auc(y, p)}
    intervals = {**bootstrap_intervals(y, decided, 0.5, resamples=resamples),
                 "auc": bootstrap_intervals(y, p, 0.5, resamples=resamples)["auc"]}  # fmt: skip
    result.update({m: _number(metrics[m]) for m in MEASURED})
    result["intervals"] = {m: [_number(v) for v in intervals[m]] for m in MEASURED}
    result["drops"] = {
        m: _number(result["champion"][m] - metrics[m]) for m in MEASURED if result["champion"][m] is not None
    }
    # Each metric needs enough of the class it is measured on: one confirmed pneumonia case makes
    # sensitivity 0 or 1, which says nothing.
    enough = {"auc": min(y.sum(), len(y) - y.sum()), "sensitivity": y.sum(), "specificity": len(y) - y.sum()}
    per_class = config["min_labelled"] // 2
    judged = {m: drop for m, drop in result["drops"].items() if enough[m] >= per_class}
    worst = max(judged.items(), key=lambda item: item[1], default=None)
    limit = config["max_performance_drop"]
    if worst is not None and worst[1] > limit and len(labelled) >= config["min_labelled"]:
        metric, drop = worst
        result["degraded"] = (
            f"live {metric} {result[metric]:.2f} on {len(labelled)} confirmed diagnoses is {drop:.2f} below "
            f"the champion's test {result['champion'][metric]:.2f} (more than {limit})"
        )
    return result


def site_checks(
    labelled: pd.DataFrame,
    y: np.ndarray,
    decided: np.ndarray,
    targets: dict[str, float],
    needed: int,
    resamples: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per site that predicted in the window (``PNEUMO_SITE``): its live sensitivity, each record
    decided as it was, against the target sensitivity the site was calibrated for on the champion.

    ``meets`` is True or False once ``needed`` confirmed pneumonia cases of a calibrated site exist
    (None before, or without a target: the site has no threshold on this version);
    ``clearly_below`` when even the upper end of the 95% interval (bootstrap of those cases) misses.
    """
    if "site" not in labelled:
        return []
    sites = labelled["site"].astype("string")
    rng = np.random.default_rng(seed)
    checks = []
    for site in sorted(sites.dropna().unique()):
        caught = decided[(sites == site).fillna(False).to_numpy() & (y == 1)]
        target = targets.get(site)
        check: dict[str, Any] = {"site": site, "target": target, "positives": len(caught), "needed": needed}
        if len(caught):
            means = caught[rng.integers(0, len(caught), (resamples, len(caught)))].mean(axis=1)
            low, high = interval(list(means))
            check.update(sensitivity=_number(caught.mean()), interval=[_number(low), _number(high)])
        judged = target is not None and len(caught) >= max(needed, 1)
        check["meets"] = bool(check["sensitivity"] >= target) if judged else None
        check["clearly_below"] = bool(judged and check["interval"][1] < target)
        checks.append(check)
    return checks


def describe(performance: dict[str, Any]) -> str:
    """One line for the report's headline and the Prefect artifact."""
    if not performance.get("labelled"):
        return "live performance: no confirmed diagnoses in this window"
    if "sensitivity" not in performance:
        return (
            f"live performance: {performance['labelled']} confirmed diagnoses; {performance.get('note', '')}"
        )
    shown = ", ".join(
        f"{m} {performance[m]:.2f} (champion's test {performance['champion'][m]:.2f})"
        if performance["champion"][m] is not None
        else f"{m} {performance[m]:.2f}"
        for m in MEASURED
        if performance[m] is not None
    )
    few = (f" (fewer than {performance['minimum']}: not yet a reason to retrain)"
           if performance["labelled"] < performance["minimum"] else "")  # fmt: skip
    sites = "".join(f"; {describe_site(check)}" for check in performance.get("sites", []))
    return f"live performance on {performance['labelled']} confirmed diagnoses{few}: {shown}{sites}"
