"""Evaluate: decision threshold on validation, test metrics and plots."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from prefect import task
from sklearn.metrics import roc_curve

from pneumo.images import load_prepared, model_input
from pneumo.metrics import REPORTED, binary_metrics, bootstrap_intervals, choose_threshold
from pneumo.models import load_keras
from pneumo.services import SERVICE_TASK, until_reachable
from tasks.preprocess import load_split, split_rows


def predict(model: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities of pneumonia for prepared uint8 images ``(N, size, size)``."""
    return model.predict(model_input(x), batch_size=batch, verbose=0).reshape(-1)


def test_images_at(processed: str, size: int, square: str) -> tuple[np.ndarray, np.ndarray]:
    """The test split prepared at another input size (to evaluate a champion of another shape)."""
    test = split_rows(processed, "test")
    x = np.stack([load_prepared(path, size, square) for path in test["path"]])
    return x, test["label"].to_numpy(np.int64)


def roc_figure(y: np.ndarray, p: np.ndarray, metrics: dict[str, float], title: str):
    """The ROC curve with the operating point of the threshold marked."""
    figure, axis = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, p)
    axis.plot(fpr, tpr, label=f"AUC = {metrics['auc']:.3f}")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    point = (1 - metrics["specificity"], metrics["sensitivity"])
    axis.scatter(*point, color="red", label="threshold", zorder=3)
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title(title)
    axis.legend(loc="lower right")
    return figure


def confusion_figure(metrics: dict[str, float], title: str):
    """The confusion matrix at the threshold, true class in rows."""
    figure, axis = plt.subplots(figsize=(4, 4))
    cells = np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])
    axis.imshow(cells, cmap="Blues")
    for (row, col), value in np.ndenumerate(cells):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=14)
    axis.set_xticks([0, 1], ["NORMAL", "PNEUMONIA"])
    axis.set_yticks([0, 1], ["NORMAL", "PNEUMONIA"])
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def _learning_curves(history: dict[str, list[float]]):
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, name in zip(axes, ("loss", "auc"), strict=True):
        for prefix in ("", "val_"):
            values = history.get(prefix + name, [])
            axis.plot(range(1, len(values) + 1), values, marker="o", label=(prefix or "train_") + name)
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.legend()
    figure.tight_layout()
    return figure


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
        cross_validated: the result of :func:`tasks.threshold.cross_validated_threshold`; without
            it the threshold is chosen on the validation split.

    Returns:
        ``threshold``, the ``test_*`` metrics with their ``_ci_low``/``_ci_high`` bounds, and the
        out-of-fold metrics of a cross-validated threshold.
    """
    model = load_keras(model_uri)
    x_test, y_test = load_split(processed, "test")
    if cross_validated is None:
        x_val, y_val = load_split(processed, "val")
        threshold = choose_threshold(y_val, predict(model, x_val), params["gate"]["target_sensitivity"])
    else:
        threshold = cross_validated["threshold"]
    p_test = predict(model, x_test)
    metrics = binary_metrics(y_test, p_test, threshold)
    patients = split_rows(processed, "test")["patient_id"].to_numpy()
    intervals = bootstrap_intervals(y_test, p_test, threshold, patients)
    results = {
        **(cross_validated or {}),
        "threshold": threshold,
        **{f"test_{k}": v for k, v in metrics.items()},
    }
    for name, (low, high) in intervals.items():
        results[f"test_{name}_ci_low"], results[f"test_{name}_ci_high"] = low, high
    history = mlflow.artifacts.load_dict(f"runs:/{run_id}/history.json")
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
            "plots/learning_curves.png": _learning_curves(history),
            "plots/roc.png": roc_figure(y_test, p_test, metrics, "ROC (test split)"),
            "plots/confusion_matrix.png": confusion_figure(metrics, "Confusion matrix (test)"),
        }
        for name, figure in figures.items():
            mlflow.log_figure(figure, name)
            plt.close(figure)
    shown = ("threshold", *(f"test_{name}" for name in REPORTED))
    print("evaluate: " + ", ".join(f"{k}={results[k]:.3f}" for k in shown))
    return results
