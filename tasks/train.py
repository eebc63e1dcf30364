"""Train: fit the model recipe (:mod:`pneumo.network`) and log everything to an MLflow run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature
from prefect import task

from pneumo.config import ROOT
from pneumo.contract import HISTORY_ARTIFACT, MODEL_ARTIFACT, ONNX_ARTIFACT, SUMMARY_ARTIFACT
from pneumo.monitoring.features import with_embedding
from pneumo.network import build_network, make_dataset, serving_graph, training_data
from pneumo.orchestration import Progress
from pneumo.processed import load_split
from pneumo.services import until_reachable


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's train and validation metrics to MLflow and prints a progress line."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.started = time.monotonic()
        self.progress = Progress(f"train: {epochs} epochs")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        metrics = {
            (key if key.startswith("val_") else f"train_{key}"): float(value)
            for key, value in (logs or {}).items()
            if key != "learning_rate"
        }
        mlflow.log_metrics(metrics, step=epoch + 1)
        self.progress.update(epoch + 1, self.epochs)
        shown = " ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()) if "loss" in k or "auc" in k)
        print(f"epoch {epoch + 1}/{self.epochs} ({time.monotonic() - self.started:.0f}s): {shown}")


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 4}}`` -> ``{"train.epochs": 4}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def git_commit() -> str:
    """The code version: ``git rev-parse HEAD`` of the checkout, or ``PNEUMO_GIT_COMMIT``."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return os.environ.get("PNEUMO_GIT_COMMIT", "unknown")
    return result.stdout.strip() or os.environ.get("PNEUMO_GIT_COMMIT", "unknown")


def log_onnx(model: keras.Model, example: np.ndarray) -> None:
    """Log the serving graph as ONNX to the active run: probability, penultimate activations and the
    Grad-CAM map (:func:`pneumo.network.serving_graph`), so the service explains without
    TensorFlow; a model with another head gets the first two only (served, explained by TensorFlow)."""
    try:
        both = serving_graph(model)
    except ValueError as error:
        print(f"{error}: the service will compute Grad-CAM with TensorFlow")
        both = with_embedding(model)
    both(example)  # Keras exports only models that have been called
    with tempfile.TemporaryDirectory(prefix="pneumo-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        both.export(str(path), format="onnx", verbose=False)
        mlflow.log_artifact(str(path), ONNX_ARTIFACT.rpartition("/")[0])


@task(name="train")
@until_reachable("training (every epoch is logged to MLflow)")
def train(processed: str, params: dict[str, Any], data_version: str, source: str) -> dict[str, str]:
    """Fit the model on the train split, validate on val, log everything to a new MLflow run.

    Returns:
        ``run_id`` and ``model_uri`` (the logged model) of the run.
    """
    cfg, size = params["train"], params["data"]["image_size"]
    keras.utils.set_random_seed(cfg["seed"])
    train_set, n_train = training_data(processed, params)
    x_val, y_val = load_split(processed, "val")
    model = build_network(size, cfg, steps=math.ceil(n_train / cfg["batch_size"]) * cfg["epochs"])
    mlflow.set_experiment(params["registry"]["experiment"])
    with mlflow.start_run(run_name=f"{params['profile']}-{cfg['backbone']}") as run:
        mlflow.log_params(flatten({k: params[k] for k in ("data", "train", "gate")}))
        summary = json.loads((Path(processed) / "summary.json").read_text())
        mlflow.log_dict(summary, SUMMARY_ARTIFACT)
        mlflow.log_metric("unreadable_images", summary["unreadable"])
        mlflow.set_tags(
            {
                "profile": params["profile"],
                "data_version": data_version,
                "data_source": source,
                "git_commit": git_commit(),
            }
        )
        print(f"train: {n_train} train / {len(y_val)} val images per epoch, backbone {cfg['backbone']}")
        callbacks: list[keras.callbacks.Callback] = [EpochLogger(cfg["epochs"])]
        if cfg["patience"]:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_auc", mode="max", patience=cfg["patience"], restore_best_weights=True
                )
            )
        history = model.fit(
            train_set,
            validation_data=make_dataset(x_val, y_val, cfg["batch_size"], None),
            epochs=cfg["epochs"],
            shuffle=False,  # the dataset shuffles itself
            callbacks=callbacks,
            verbose=0,
        )
        mlflow.log_dict(history.history, HISTORY_ARTIFACT)
        example = x_val[:1, ..., np.newaxis].astype(np.float32)
        signature = infer_signature(example, model.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(
            model, name=MODEL_ARTIFACT, signature=signature, input_example=example
        )
        log_onnx(model, example)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri}
