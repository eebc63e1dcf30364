"""The plots logged with a training run and written by ``pneumo evaluate``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve


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


def learning_curves(history: dict[str, list[float]]):
    """Loss and AUC per epoch, train and validation side by side."""
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
