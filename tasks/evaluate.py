"""Evaluate: the decision threshold, test metrics with intervals, and plots, logged to the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from prefect import task

from pneumo.calibration import fit_platt
from pneumo.contract import HISTORY_ARTIFACT, INT8_ARTIFACT
from pneumo.degrade import copy_metrics, degraded_copies
from pneumo.figures import confusion_figure, learning_curves, roc_figure
from pneumo.metrics import REPORTED, binary_metrics, bootstrap_intervals, choose_threshold, threshold_spread
from pneumo.models import load_keras
from pneumo.network import predict
from pneumo.processed import load_split, split_rows
from pneumo.quantize import agreement, serve_int8
from pneumo.registry import artifact
from pneumo.runtime import onnx_session_runtime, run_batches
from pneumo.services import SERVICE_TASK, until_reachable


def test_copies(processed: str, data: dict[str, Any]) -> dict[str, np.ndarray]:
    """The test split's prepared images under each of :data:`pneumo.degrade.DEGRADED` (stand-ins
    for another site's pipeline). Empty, with a note, when the raw images are no longer on disk (a
    DVC stage run on another machine) or cannot be degraded: they inform, and never fail a run."""
    paths = split_rows(processed, "test")["path"].tolist()
    if not all(Path(path).is_file() for path in paths):
        print("evaluate: the raw test images are gone: no degraded copies measured")
        return {}
    try:
        return degraded_copies(paths, data["image_size"], data["square"])
    except Exception as error:
        print(f"evaluate: degraded copies not measured: {type(error).__name__}: {error}")
        return {}


def int8_results(run_id: str, y_test: np.ndarray, images: dict[str, np.ndarray],
                 float_scores: dict[str, np.ndarray], threshold: float, metrics: dict[str, float],
                 rules: dict[str, Any]) -> dict[str, float]:  # fmt: skip
    """The int8 graph's check (:func:`pneumo.quantize.agreement`) on the test split and its copies,
    and ``int8_served`` (1.0: the service runs it); empty when the run has no int8 graph."""
    graph = artifact(run_id, INT8_ARTIFACT)
    if graph is None:
        return {}
    run = onnx_session_runtime(graph)
    int8_scores = {name: run_batches(run, x)[0] for name, x in images.items()}
    results = agreement(y_test, float_scores, int8_scores, threshold)
    results["int8_served"] = float(serve_int8(results, metrics, rules))
    verdict = "served" if results["int8_served"] else "not served: the float graph is"
    print(f"evaluate: int8 graph decides as the float model on {results['int8_agreement']:.1%} of "
          f"{len(images) * len(y_test)} images (largest difference "
          f"{results['int8_max_abs_difference']:.3f}): {verdict}")  # fmt: skip
    return results


@task(name="evaluate", **SERVICE_TASK)
@until_reachable("evaluating the model")
def evaluate(
    run_id: str,
    model_uri: str,
    processed: str,
    params: dict[str, Any],
    cross_validated: dict[str, float] | None = None,
) -> dict[str, float]:
    """Choose the threshold, score the test split, log metrics and plots to the run.

    Args:
        run_id: the training run.
        model_uri: the trained model.
        processed: the processed data folder.
        params: the parameters.
        cross_validated: the result of :func:`pneumo.tasks.threshold.cross_validated_threshold`; without
            it the threshold is chosen on the validation split.

    Returns:
        ``threshold``, Platt scaling (``calibration_a``, ``calibration_b``, fitted where the
        threshold is chosen), the ``test_*`` metrics with their ``_ci_low``/``_ci_high`` bounds, the
        ``degraded_*`` metrics, and the out-of-fold metrics of a cross-validated threshold.
    """
    model = load_keras(model_uri)
    x_test, y_test = load_split(processed, "test")
    spread: dict[str, float] = {}
    target = params["gate"]["target_sensitivity"]
    if cross_validated is None:  # threshold and calibration from the validation split
        x_val, y_val = load_split(processed, "val")
        p_val = predict(model, x_val)
        threshold = choose_threshold(y_val, p_val, target)
        calibration_a, calibration_b = fit_platt(y_val, p_val)
        val_patients = split_rows(processed, "val")["patient_id"].to_numpy()
        spread = threshold_spread(y_val, p_val, target, val_patients, params["gate"]["bootstrap_resamples"])
    else:
        threshold = cross_validated["threshold"]
        calibration_a, calibration_b = cross_validated["calibration_a"], cross_validated["calibration_b"]
    p_test = predict(model, x_test)
    metrics = binary_metrics(y_test, p_test, threshold)
    patients = split_rows(processed, "test")["patient_id"].to_numpy()
    intervals = bootstrap_intervals(y_test, p_test, threshold, patients)
    results = {
        **(cross_validated or {}),
        "threshold": threshold,
        "calibration_a": calibration_a,
        "calibration_b": calibration_b,
        **{f"test_{k}": v for k, v in metrics.items()},
    }
    for name, (low, high) in intervals.items():
        results[f"test_{name}_ci_low"], results[f"test_{name}_ci_high"] = low, high
    results.update(spread)
    for end in ("threshold_ci_low", "threshold_ci_high"):  # the test split at both ends
        if end in spread:
            at = binary_metrics(y_test, p_test, spread[end])
            results[f"test_sensitivity_at_{end}"] = at["sensitivity"]
            results[f"test_specificity_at_{end}"] = at["specificity"]
    images = {"original": x_test, **test_copies(processed, params["data"])}
    float_scores = {name: p_test if name == "original" else predict(model, x) for name, x in images.items()}
    for name, p in float_scores.items():
        if name != "original":
            results.update({f"degraded_{name}_{m}": v for m, v in copy_metrics(y_test, p, threshold).items()})
    results.update(int8_results(run_id, y_test, images, float_scores, threshold, metrics, params["export"]))
    history = mlflow.artifacts.load_dict(f"runs:/{run_id}/{HISTORY_ARTIFACT}")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(results)
        mlflow.log_dict(
            {
                "threshold": threshold,
                "confusion_matrix": [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]],
            },
            "evaluation/confusion_matrix.json",
        )
        mlflow.log_table(
            pd.DataFrame({"label": y_test, "probability": p_test}), "evaluation/test_predictions.json"
        )
        figures = {
            "plots/learning_curves.png": learning_curves(history),
            "plots/roc.png": roc_figure(y_test, p_test, metrics, "ROC (test split)"),
            "plots/confusion_matrix.png": confusion_figure(metrics, "Confusion matrix (test)"),
        }
        for name, figure in figures.items():
            mlflow.log_figure(figure, name)
            plt.close(figure)
    shown = ("threshold", *(f"test_{name}" for name in REPORTED))
    print("evaluate: " + ", ".join(f"{k}={results[k]:.3f}" for k in shown))
    return results
