"""The report of ``benchmarks/quality.py``: metrics per condition, operating points, and the targets.

Reads the cross-validated predictions the benchmark saved (every image scored by the fold model that
did not see it, under every degraded condition of :mod:`pneumo.degrade`) and summarises them:
sensitivity and specificity at the out-of-fold threshold, the threshold's spread across folds, what
a site calibration on 100 images achieves (``pneumo calibrate``), Platt scaling, and the training
flow's threshold-fold models averaged against the single model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from pneumo.calibration import (
    brier,
    expected_calibration_error,
    fit_platt,
    site_calibration_draws,
)
from pneumo.contract import platt
from pneumo.degrade import CONDITIONS
from pneumo.metrics import binary_metrics, bootstrap_intervals, choose_threshold

TARGETS = {"auc": 0.98, "sensitivity": 0.95, "specificity": 0.90, "max_auc_drop": 0.02}


def summarise(table: Any, folds: int, target_sensitivity: float) -> dict[str, Any]:
    """Per-fold and pooled metrics per condition, thresholds chosen out of fold."""

    results: dict[str, Any] = {"thresholds": {}, "conditions": {}}
    for k in range(folds):
        others = table[table["fold"] != k]
        results["thresholds"][k] = choose_threshold(
            others["label"].to_numpy(), others["original"].to_numpy(), target_sensitivity
        )
    for name in CONDITIONS:
        per_fold = []
        for k in range(folds):
            rows = table[table["fold"] == k]
            y, p = rows["label"].to_numpy(), rows[name].to_numpy()
            metrics = binary_metrics(y, p, results["thresholds"][k])
            fpr, tpr, _ = roc_curve(y, p)
            metrics["sensitivity_at_spec_0.90"] = float(tpr[fpr <= 0.10].max())
            per_fold.append(metrics)
        pooled_threshold = table["fold"].map(results["thresholds"]).to_numpy()
        y, p = table["label"].to_numpy(), table[name].to_numpy()
        decided = (p >= pooled_threshold).astype(float)  # each image at its own fold's threshold
        pooled = binary_metrics(y, decided, 0.5)
        pooled["auc"] = binary_metrics(y, p, 0.5)["auc"]
        intervals = bootstrap_intervals(y, decided, 0.5, table["patient_id"].to_numpy())
        intervals["auc"] = bootstrap_intervals(y, p, 0.5, table["patient_id"].to_numpy())["auc"]
        summary = {}
        for metric in ("auc", "sensitivity", "specificity", "sensitivity_at_spec_0.90", "accuracy"):
            values = np.array([m[metric] for m in per_fold])
            summary[metric] = {"mean": float(values.mean()), "std": float(values.std()),
                               "folds": [round(float(v), 4) for v in values]}  # fmt: skip
        summary["pooled"] = {m: pooled[m] for m in ("auc", "sensitivity", "specificity", "precision", "f1")}
        summary["pooled_intervals"] = {m: intervals[m] for m in ("auc", "sensitivity", "specificity")}
        results["conditions"][name] = summary
    base = np.array(results["conditions"]["original"]["auc"]["folds"])
    for summary in results["conditions"].values():
        summary["auc_drop"] = float((base - np.array(summary["auc"]["folds"])).mean())
    return results


def site_calibration(table: Any, target: float) -> dict[str, Any]:
    """Per condition: calibrate on a random 100-image sample of the out-of-fold scores, measure the rest
    (20 draws), as ``pneumo calibrate`` would at a site whose images look like that."""
    y, patients = table["label"].to_numpy(), table["patient_id"].to_numpy()
    return {name: site_calibration_draws(y, table[name].to_numpy(), patients, target) for name in CONDITIONS}


def platt_check(table: Any, folds: int) -> dict[str, Any]:
    """Brier score and calibration error before and after Platt scaling fitted on the other folds."""
    result: dict[str, Any] = {}
    for name in CONDITIONS:
        raw, scaled = [], []
        for k in range(folds):
            others, rows = table[table["fold"] != k], table[table["fold"] == k]
            a, b = fit_platt(others["label"].to_numpy(), others["original"].to_numpy())
            raw.append(rows[name].to_numpy())
            scaled.append(platt(rows[name].to_numpy(), a, b))
        y = np.concatenate([table[table["fold"] == k]["label"].to_numpy() for k in range(folds)])
        raw_p, scaled_p = np.concatenate(raw), np.concatenate(scaled)
        result[name] = {"brier": brier(y, raw_p), "brier_platt": brier(y, scaled_p),
                        "ece": expected_calibration_error(y, raw_p),
                        "ece_platt": expected_calibration_error(y, scaled_p)}  # fmt: skip
    return result


def ensemble_comparison(out: Path, table: Any, predictions: Any, ensemble: int, target: float) -> dict | None:
    """The averaged fold models, and those with the single model ("both"), against the single model,
    all at the flow's threshold policy (chosen on the fold models' out-of-fold scores), on every
    outer fold that has them."""
    y_all = table["label"].to_numpy()
    done = sorted(int(p.name[4:].split("-")[0]) for p in out.glob(f"fold*-ensemble{ensemble}.csv"))
    if not done:
        return None
    per_fold, decided = [], {"single": [], "ensemble": [], "both": []}
    for k in done:
        oof = pd.read_csv(out / f"fold{k}-oof{ensemble}.csv")
        threshold = choose_threshold(y_all[oof["row"]], oof["oof"].to_numpy(), target)
        inner = [
            choose_threshold(y_all[g["row"]], g["oof"].to_numpy(), target) for _, g in oof.groupby("model")
        ]
        single = predictions[predictions["fold"] == k].reset_index(drop=True)
        averaged = pd.read_csv(out / f"fold{k}-ensemble{ensemble}.csv")
        if not (single["path"] == averaged["path"]).all():
            raise ValueError(f"fold {k}: the single model's and the fold models' rows differ: rerun it")
        both = single.copy()  # the single model and the fold models, all averaged
        for name in CONDITIONS:
            both[name] = (single[name] + ensemble * averaged[name]) / (ensemble + 1)
        variants = {"single": single, "ensemble": averaged, "both": both}
        fold = {"fold": k, "threshold": threshold, "fold_model_thresholds": inner}
        for variant, rows in variants.items():
            y = rows["label"].to_numpy()
            fold[variant] = {name: binary_metrics(y, rows[name].to_numpy(), threshold) for name in CONDITIONS}
            decided[variant].append(rows.assign(threshold=threshold))
        per_fold.append(fold)
    pooled: dict[str, Any] = {}
    for variant, frames in decided.items():
        rows = pd.concat(frames)
        y, t = rows["label"].to_numpy(), rows["threshold"].to_numpy()
        pooled[variant] = {}
        for name in CONDITIONS:
            metrics = binary_metrics(y, (rows[name].to_numpy() >= t).astype(float), 0.5)
            pooled[variant][name] = {
                "auc": float(np.mean([f[variant][name]["auc"] for f in per_fold])),
                **{m: metrics[m] for m in ("sensitivity", "specificity")},
            }
    return {"folds": done, "fold_models": ensemble, "per_fold": per_fold, "pooled": pooled}


def print_report(results: dict[str, Any], seconds: list[float]) -> None:
    """The results as a markdown table, then each target and whether it is met."""
    print("\n| condition | AUC mean ± sd | AUC drop | sens | spec | sens @ spec 0.90 | pooled AUC [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for name, s in results["conditions"].items():
        low, high = s["pooled_intervals"]["auc"]
        auc, sens, spec = s["auc"], s["sensitivity"], s["specificity"]
        print(
            f"| {name} | {auc['mean']:.4f} ± {auc['std']:.4f} | {s['auc_drop']:+.4f} | "
            f"{sens['mean']:.3f} ± {sens['std']:.3f} | {spec['mean']:.3f} ± {spec['std']:.3f} | "
            f"{s['sensitivity_at_spec_0.90']['mean']:.3f} | "
            f"{s['pooled']['auc']:.4f} [{low:.4f}, {high:.4f}] |"
        )
    original = {metric: value["mean"] for metric, value in results["conditions"]["original"].items()
                if isinstance(value, dict) and "mean" in value}  # fmt: skip
    worst = max(s["auc_drop"] for s in results["conditions"].values())
    checks = [
        (f"AUC >= {TARGETS['auc']}", original["auc"] >= TARGETS["auc"]),
        (f"sensitivity >= {TARGETS['sensitivity']} at the out-of-fold threshold",
         original["sensitivity"] >= TARGETS["sensitivity"]),
        (f"specificity >= {TARGETS['specificity']} at that threshold",
         original["specificity"] >= TARGETS["specificity"]),
        (f"sensitivity >= {TARGETS['sensitivity']} at specificity 0.90 on each fold's ROC (optimistic: "
         "the operating point is read off the held-out fold itself)",
         original["sensitivity_at_spec_0.90"] >= TARGETS["sensitivity"]),
        (f"AUC drop <= {TARGETS['max_auc_drop']} on every condition (worst {worst:+.4f})",
         worst <= TARGETS["max_auc_drop"]),
        (f"one fold trains in < 10 min (slowest {max(seconds) / 60:.1f} min)", max(seconds) < 600),
    ]  # fmt: skip
    print()
    for check, met in checks:
        print(f"{'met   ' if met else 'MISSED'}  {check}")


def print_operating_points(results: dict[str, Any], target: float) -> None:
    """Threshold spread, site calibration, Platt scaling and the fold-model ensemble, as tables."""
    thresholds = np.array(list(results["thresholds"].values()))
    print(f"\nthreshold across the {len(thresholds)} outer folds (each chosen on the others' out-of-fold "
          f"scores): {thresholds.mean():.4f} ± {thresholds.std():.4f}, range {thresholds.min():.4f}-"
          f"{thresholds.max():.4f}")  # fmt: skip
    print(f"\nsite calibration (pneumo calibrate, target sensitivity {target}): threshold chosen on a random "
          "100-image sample, measured on the rest, 20 draws")  # fmt: skip
    print("| condition | sens mean ± sd (min) | spec mean ± sd (min) | threshold range |")
    print("|---|---|---|---|")
    for name, d in results["site_calibration"].items():
        cells = [
            f"{d[m]['mean']:.3f} ± {d[m]['sd']:.3f} ({d[m]['min']:.3f})"
            for m in ("sensitivity", "specificity")
        ]
        print(f"| {name} | {' | '.join(cells)} | {min(d['thresholds']):.4f}-{max(d['thresholds']):.4f} |")
    print("\nPlatt scaling fitted on the other folds' out-of-fold scores (lower is better)")
    print("| condition | Brier | Brier, Platt | calibration error | calibration error, Platt |")
    print("|---|---|---|---|---|")
    for name, c in results["platt"].items():
        print(
            f"| {name} | {c['brier']:.4f} | {c['brier_platt']:.4f} | {c['ece']:.4f} | {c['ece_platt']:.4f} |"
        )
    comparison = results.get("ensemble")
    if comparison:
        print(f"\nthe flow's {comparison['fold_models']} threshold-fold models averaged, against the single "
              f"model, at the flow's threshold (outer folds {comparison['folds']})")  # fmt: skip
        spread = [np.std(f["fold_model_thresholds"]) for f in comparison["per_fold"]]
        print(f"fold models' own thresholds: sd {np.mean(spread):.4f} within an outer fold")
        print("| condition | AUC: single, fold models, all | sens / spec: single | fold models | all |")
        print("|---|---|---|---|---|")
        pooled = comparison["pooled"]
        for name in CONDITIONS:
            rows = [pooled[variant][name] for variant in ("single", "ensemble", "both")]
            aucs = ", ".join(f"{v['auc']:.4f}" for v in rows)
            points = " | ".join(f"{v['sensitivity']:.3f} / {v['specificity']:.3f}" for v in rows)
            print(f"| {name} | {aucs} | {points} |")


def site_checks(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """The bar for site calibration: calibrated on 100 images, sensitivity >= 0.93 and specificity
    >= 0.90 on average, at home and on every degraded copy standing in for another site."""
    checks = []
    for name in results["site_calibration"]:
        d = results["site_calibration"][name]
        checks.append((f"site calibration on {name}: sensitivity {d['sensitivity']['mean']:.3f} >= 0.93 and "
                       f"specificity {d['specificity']['mean']:.3f} >= 0.90 on average",
                       d["sensitivity"]["mean"] >= 0.93 and d["specificity"]["mean"] >= 0.90))  # fmt: skip
    return checks
