"""A decision threshold from cross-validation instead of a small validation split.

With a few hundred training images the validation split holds a few dozen pneumonia cases, and
the threshold that reaches 95% sensitivity on them (about the second-lowest positive score) swings
widely between runs. With ``gate.threshold_folds: K`` the training patients are split into K
folds, K models are trained with the same recipe, each predicts the fold it did not see, and the
threshold is chosen on all those out-of-fold predictions. ``benchmarks/quality.py`` measures this
policy on unseen patients.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
from prefect import task
from sklearn.metrics import roc_auc_score

from pneumo.calibration import fit_platt
from pneumo.metrics import binary_metrics, choose_threshold
from pneumo.network import fit_on_contexts, patient_folds, predict
from pneumo.orchestration import Progress
from pneumo.processed import load_contexts, load_split, split_rows


class FoldProgress(keras.callbacks.Callback):
    """Says how far the fold models are: a log line every few epochs and the progress artifact."""

    def __init__(self, folds: int, epochs: int) -> None:
        super().__init__()
        self.folds, self.epochs, self.fold = folds, epochs, 0
        self.started = time.monotonic()
        self.artifact = Progress(f"threshold: {folds} fold models of {epochs} epochs")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        done = self.fold * self.epochs + epoch + 1
        self.artifact.update(done, self.folds * self.epochs)
        if (epoch + 1) % max(1, self.epochs // 5) == 0:
            print(f"threshold: fold {self.fold + 1}/{self.folds}, epoch {epoch + 1}/{self.epochs} "
                  f"({time.monotonic() - self.started:.0f}s)")  # fmt: skip


@task(name="cross-validated-threshold")
def cross_validated_threshold(processed: str, params: dict[str, Any]) -> dict[str, float]:
    """The threshold reaching ``gate.target_sensitivity`` on out-of-fold predictions of the train split.

    Returns:
        ``threshold``, the out-of-fold ``oof_auc``, ``oof_sensitivity``, ``oof_specificity``, and
        Platt scaling fitted on them (``calibration_a``, ``calibration_b``), and the spread of the
        thresholds each fold's own held-out scores would give
        (``threshold_fold_sd``, ``threshold_fold_min``, ``threshold_fold_max``): how far one
        model's threshold moves with the patients it is chosen on.

    Raises:
        ValueError: fewer patients of a class than folds.
    """
    folds = params["gate"]["threshold_folds"]
    contexts, y = load_contexts(processed)
    x, _ = load_split(processed, "train")
    patients = split_rows(processed, "train")["patient_id"].to_numpy()
    oof = np.zeros(len(y))
    fold_thresholds = []
    epochs = params["train"]["epochs"]
    progress = FoldProgress(folds, epochs)
    for k, (fit_rows, held_rows) in enumerate(patient_folds(y, patients, folds, params["data"]["seed"])):
        progress.fold = k
        model = fit_on_contexts(
            [contexts[i] for i in fit_rows], y[fit_rows], params, params["train"]["seed"] + k, [progress]
        )
        oof[held_rows] = predict(model, x[held_rows])
        fold_thresholds.append(
            choose_threshold(y[held_rows], oof[held_rows], params["gate"]["target_sensitivity"])
        )
        keras.backend.clear_session()
        print(f"threshold: fold {k + 1}/{folds} done ({time.monotonic() - progress.started:.0f}s)")
    threshold = choose_threshold(y, oof, params["gate"]["target_sensitivity"])
    metrics = binary_metrics(y, oof, threshold)
    result = {"threshold": threshold, "oof_auc": float(roc_auc_score(y, oof))}
    result.update(oof_sensitivity=metrics["sensitivity"], oof_specificity=metrics["specificity"])
    result["calibration_a"], result["calibration_b"] = fit_platt(y, oof)
    result.update(threshold_fold_sd=float(np.std(fold_thresholds)), threshold_fold_min=min(fold_thresholds),
                  threshold_fold_max=max(fold_thresholds))  # fmt: skip
    print("threshold: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    return result
