"""Train: fit the model recipe (:mod:`pneumo.network`) and log everything to an MLflow run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature
from prefect import task

from pneumo.config import ROOT
from pneumo.contract import (
    CHAMPION,
    HISTORY_ARTIFACT,
    INT8_ARTIFACT,
    MODEL_ARTIFACT,
    ONNX_ARTIFACT,
    SUMMARY_ARTIFACT,
)
from pneumo.models import alias_version, load_keras
from pneumo.monitoring.features import with_embedding
from pneumo.network import build_network, parts_dataset, serving_graph, training_data
from pneumo.orchestration import Progress
from pneumo.processed import sample_split
from pneumo.quantize import quantize
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


# What a logged Keras model needs to load, pinned to the versions that trained it (the first of each
# group that is installed: TensorFlow may be the -cpu build). MLflow would infer the same list by
# loading the model in a subprocess: ~7 s of every training on 2 cores.
MODEL_REQUIREMENTS = (("mlflow",), ("tensorflow", "tensorflow-cpu"), ("keras",), ("numpy",), ("cloudpickle",))


def model_requirements() -> list[str]:
    """:data:`MODEL_REQUIREMENTS` as ``name==version`` of this environment (the training's own)."""
    pinned = []
    for names in MODEL_REQUIREMENTS:
        for name in names:
            try:
                pinned.append(f"{name}=={importlib.metadata.version(name)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return pinned


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


def log_onnx(model: keras.Model, example: np.ndarray, to_int8: Callable[[bytes], bytes] | None) -> None:
    """Log the serving graph as ONNX to the active run: probability, penultimate activations and the
    Grad-CAM map (:func:`pneumo.network.serving_graph`), so the service explains without
    TensorFlow; a model with another head gets the first two only (served, explained by TensorFlow).

    With ``to_int8`` (:func:`int8_quantizer`), also its int8 version, which the evaluate task judges
    before the service may run it.
    """
    try:
        both = serving_graph(model)
    except ValueError as error:
        print(f"{error}: the service will compute Grad-CAM with TensorFlow")
        both = with_embedding(model)
    both(example)  # Keras exports only models that have been called
    with tempfile.TemporaryDirectory(prefix="pneumo-onnx-") as folder:
        path = Path(folder) / Path(ONNX_ARTIFACT).name
        both.export(str(path), format="onnx", verbose=False)
        mlflow.log_artifact(str(path), Path(ONNX_ARTIFACT).parent.as_posix())
        if to_int8 is None:
            return
        started = time.monotonic()
        quantized = Path(folder) / Path(INT8_ARTIFACT).name
        quantized.write_bytes(to_int8(path.read_bytes()))
        mlflow.log_artifact(str(quantized), Path(INT8_ARTIFACT).parent.as_posix())
        print(f"train: int8 graph quantized in {time.monotonic() - started:.0f} s")


def int8_quantizer(processed: str, export: dict[str, Any], seed: int) -> Callable[[bytes], bytes] | None:
    """:func:`pneumo.quantize.quantize` of ``export.int8_ops``, with ranges from a seeded sample of
    ``export.calibration_images`` training images; None without ``export.int8``."""
    if not export["int8"]:
        return None
    calibration = sample_split(processed, "train", export["calibration_images"], seed)
    return partial(quantize, calibration=calibration, ops=export["int8_ops"])


def champion_start(params: dict[str, Any], size: int) -> tuple[list[np.ndarray] | None, str]:
    """The champion's weights to start from, with ``train.warm_start_epochs``, and why (or why not).

    Only a champion whose network has exactly this recipe's shape (input and every weight) is a
    start; any other (another backbone, size or head, or none) leaves the training from scratch.
    """
    if not params["train"]["warm_start_epochs"]:
        return None, "from scratch"
    name = params["registry"]["model_name"]
    champion = alias_version(name, CHAMPION)
    if champion is None:
        return None, f"from scratch: {name} has no champion to start from"
    previous = load_keras(f"models:/{name}/{champion.version}")
    probe = build_network(size, params["train"], steps=1)
    shapes = [w.shape for w in probe.get_weights()]
    if tuple(previous.inputs[0].shape[1:]) != tuple(probe.inputs[0].shape[1:]) or shapes != [
        w.shape for w in previous.get_weights()
    ]:
        return None, f"from scratch: champion v{champion.version}'s network is not this recipe's"
    return previous.get_weights(), f"from champion v{champion.version}'s weights"


@task(name="train")
@until_reachable("training (every epoch is logged to MLflow)")
def train(processed: str, params: dict[str, Any], data_version: str, source: str) -> dict[str, str]:
    """Fit the model on the train split, validate on val, log everything to a new MLflow run.

    Returns:
        ``run_id`` and ``model_uri`` (the logged model) of the run.
    """
    cfg, size = params["train"], params["data"]["image_size"]
    start, started_from = champion_start(params, size)
    keras.utils.set_random_seed(cfg["seed"])
    epochs = cfg["warm_start_epochs"] if start is not None else cfg["epochs"]
    train_set, n_train = training_data(processed, params)
    val_set, n_val = parts_dataset(processed, "val", size, cfg["batch_size"], None)
    model = build_network(
        size, cfg, steps=int(train_set.cardinality()) * epochs
    )  # batches stay within a part
    if start is not None:
        model.set_weights(start)
    mlflow.set_experiment(params["registry"]["experiment"])
    with mlflow.start_run(run_name=f"{params['profile']}-{cfg['backbone']}") as run:
        mlflow.log_params(flatten({k: params[k] for k in ("data", "train", "gate", "export")}))
        summary = json.loads((Path(processed) / "summary.json").read_text())
        mlflow.log_dict(summary, SUMMARY_ARTIFACT)
        mlflow.log_metric("unreadable_images", summary["unreadable"])
        mlflow.set_tags(
            {
                "profile": params["profile"],
                "data_version": data_version,
                "data_source": source,
                "git_commit": git_commit(),
                "started_from": started_from,
            }
        )
        print(f"train: {n_train} train / {n_val} val images per epoch, backbone {cfg['backbone']}, "
              f"{epochs} epochs {started_from}")  # fmt: skip
        callbacks: list[keras.callbacks.Callback] = [EpochLogger(epochs)]
        if cfg["patience"]:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_auc", mode="max", patience=cfg["patience"], restore_best_weights=True
                )
            )
        history = model.fit(
            train_set,
            validation_data=val_set,
            epochs=epochs,
            shuffle=False,  # the dataset shuffles itself
            callbacks=callbacks,
            verbose=0,
        )
        mlflow.log_dict(history.history, HISTORY_ARTIFACT)
        example = sample_split(processed, "val", 1, 0)[..., np.newaxis].astype(np.float32)
        signature = infer_signature(example, model.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            pip_requirements=model_requirements(),
        )
        log_onnx(model, example, int8_quantizer(processed, params["export"], cfg["seed"]))
    return {"run_id": run.info.run_id, "model_uri": info.model_uri}
