"""A decision threshold from cross-validation instead of a small validation split.

With a few hundred training images the validation split holds a few dozen pneumonia cases, and
the threshold that reaches 95% sensitivity on them (about the second-lowest positive score) swings
widely between runs. With ``gate.threshold_folds: K`` the training patients are split into K
folds, K models are trained with the same recipe, each predicts the fold it did not see, and the
threshold is chosen on all those out-of-fold predictions. ``benchmarks/quality.py`` measures this
policy on unseen patients.
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np
from prefect import task
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.metrics import binary_metrics, choose_threshold
from tasks.evaluate import predict
from tasks.preprocess import load_contexts, load_split, split_rows
from tasks.train import augmented_dataset, build_model


def fit_on_contexts(contexts: list[np.ndarray], y: np.ndarray, params: dict[str, Any], seed: int):
    """Train a fresh model of the recipe on context images, with online augmentation, all epochs.

    Args:
        contexts: the training images' context images (:mod:`pneumo.augment`).
        y: their labels.
        params: the parameters of the recipe.
        seed: seeds weights, order and augmentation.

    Returns:
        The trained Keras model.
    """
    data, cfg = params["data"], params["train"]
    keras.utils.set_random_seed(seed)
    dataset, n = augmented_dataset(contexts, y, data["image_size"], cfg["batch_size"], data, seed)
    model = build_model(data["image_size"], cfg, steps=math.ceil(n / cfg["batch_size"]) * cfg["epochs"])
    model.fit(dataset, epochs=cfg["epochs"], verbose=0, shuffle=False)  # the views come shuffled
    return model


def patient_folds(
    y: np.ndarray, patients: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit_rows, held_rows)`` of each fold: stratified by label, no patient in two folds."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, patients))


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
