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

from pneumo.metrics import binary_metrics, choose_threshold
from pneumo.network import fit_on_contexts, patient_folds, predict
from pneumo.processed import load_contexts, load_split, split_rows


@task(name="cross-validated-threshold")
def cross_validated_threshold(processed: str, params: dict[str, Any]) -> dict[str, float]:
    """The threshold reaching ``gate.target_sensitivity`` on out-of-fold predictions of the train split.

    Returns:
        ``threshold`` and the out-of-fold ``oof_auc``, ``oof_sensitivity``, ``oof_specificity``.

    Raises:
        ValueError: fewer patients of a class than folds.
    """
    folds = params["gate"]["threshold_folds"]
    contexts, y = load_contexts(processed)
    x, _ = load_split(processed, "train")
    patients = split_rows(processed, "train")["patient_id"].to_numpy()
    oof = np.zeros(len(y))
    started = time.monotonic()
    for k, (fit_rows, held_rows) in enumerate(patient_folds(y, patients, folds, params["data"]["seed"])):
        model = fit_on_contexts(
            [contexts[i] for i in fit_rows], y[fit_rows], params, params["train"]["seed"] + k
        )
        oof[held_rows] = predict(model, x[held_rows])
        keras.backend.clear_session()
        print(f"threshold: fold {k + 1}/{folds} done ({time.monotonic() - started:.0f}s)")
    threshold = choose_threshold(y, oof, params["gate"]["target_sensitivity"])
    metrics = binary_metrics(y, oof, threshold)
    result = {"threshold": threshold, "oof_auc": float(roc_auc_score(y, oof))}
    result.update(oof_sensitivity=metrics["sensitivity"], oof_specificity=metrics["specificity"])
    print("threshold: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    return result
