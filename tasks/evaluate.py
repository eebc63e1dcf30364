"""Evaluate: the decision threshold, test metrics with intervals, and plots, logged to the run."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
from prefect import task

from pneumo.calibration import fit_platt
from pneumo.contract import HISTORY_ARTIFACT
from pneumo.degrade import degraded_metrics
from pneumo.figures import confusion_figure, learning_curves, roc_figure
from pneumo.metrics import REPORTED, binary_metrics, bootstrap_intervals, choose_threshold
from pneumo.models import load_keras
from pneumo.network import predict
from pneumo.processed import load_split, split_rows
from pneumo.services import SERVICE_TASK, until_reachable


def degraded_test_metrics(
    model: Any, processed: str, y_test: Any, threshold: float, data: dict[str, Any]
) -> dict[str, float]:
    """``degraded_<condition>_<metric>``: the test split under each of :data:`pneumo.degrade.DEGRADED`
    (stand-ins for another site's pipeline), decided at the stored threshold. Empty, with a note,
    when the raw images are no longer on disk (a DVC stage run on another machine)."""
    paths = split_rows(processed, "test")["path"].tolist()
    if not all(Path(path).is_file() for path in paths):
        print("evaluate: the raw test images are gone: no degraded copies measured")
        return {}
    score = partial(predict, model)
    try:
        measured = degraded_metrics(paths, y_test, score, threshold, data["image_size"], data["square"])
    except Exception as error:  # informational: it must never fail a training run
        print(f"evaluate: degraded copies not measured: {type(error).__name__}: {error}")
        return {}
    return {f"degraded_{name}_{metric}": value for name, values in measured.items()
            for metric, value in values.items()}  # fmt: skip


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
    if cross_validated is None:  # threshold and calibration from the validation split
        x_val, y_val = load_split(processed, "val")
        p_val = predict(model, x_val)
        threshold = choose_threshold(y_val, p_val, params["gate"]["target_sensitivity"])
        calibration_a, calibration_b = fit_platt(y_val, p_val)
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
    results.update(degraded_test_metrics(model, processed, y_test, threshold, params["data"]))
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
