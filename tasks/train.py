"""Train: a Keras transfer-learning classifier, tracked in MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import tensorflow as tf
from keras import layers
from mlflow.models import infer_signature
from prefect import task

from monitoring.features import ONNX_ARTIFACT, with_embedding
from pneumo.config import ROOT
from serving.gradcam import FEATURE_POOL
from tasks.preprocess import load_split

BACKBONES = ("densenet121", "mobilenet_v3_small", "small_cnn")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGENET_SCALE = (1 / np.asarray(IMAGENET_STD)).tolist()
IMAGENET_OFFSET = (-np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).tolist()


def _backbone(name: str, size: int, weights: str) -> keras.Model:
    pretrained = "imagenet" if weights == "imagenet" else None
    if name == "densenet121":
        base = keras.applications.DenseNet121(
            include_top=False, weights=pretrained, input_shape=(size, size, 3)
        )
    elif name == "mobilenet_v3_small":
        base = keras.applications.MobileNetV3Small(
            include_top=False,
            weights=pretrained,
            input_shape=(size, size, 3),
            include_preprocessing=False,
        )
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    if weights not in ("none", "imagenet"):
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file {weights} not found")
        base.load_weights(weights)
    return base


def _small_cnn(x: keras.KerasTensor) -> keras.KerasTensor:
    for filters in (16, 32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    return x


def _all_layers(layer: keras.Layer):
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _all_layers(sub)


def build_model(size: int, train: dict[str, Any]) -> keras.Model:
    """Backbone + dense head with a sigmoid output, compiled with Adam and binary cross-entropy.

    The input is a grayscale image with pixel values in 0..255; the first layer normalises it to
    [0, 1], so training and serving share one preprocessing path inside the model.
    """
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="normalise")(inputs)
    if train["backbone"] == "small_cnn":
        feature_map = _small_cnn(x)
    else:
        rgb = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        if train["backbone"] == "densenet121":
            # ImageNet statistics as constants of a Rescaling layer (a Normalization layer's would
            # become inputs of the exported ONNX graph).
            rgb = layers.Rescaling(IMAGENET_SCALE, offset=IMAGENET_OFFSET, name="imagenet")(rgb)
        else:
            rgb = layers.Rescaling(2.0, offset=-1.0)(rgb)
        feature_map = _backbone(train["backbone"], size, train["weights"])(rgb)
    # The last convolutional feature map enters this named pooling layer: Grad-CAM starts there.
    features = layers.GlobalAveragePooling2D(name=FEATURE_POOL)(feature_map)
    x = layers.Dense(train["head_units"], activation="relu", name="head")(features)
    x = layers.Dropout(train["dropout"])(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    model = keras.Model(inputs, outputs, name=f"pneumo_{train['backbone']}")
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = train["bn_momentum"]
    model.compile(
        optimizer=keras.optimizers.Adam(train["learning_rate"]),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ],
    )
    return model


def make_dataset(x: np.ndarray, y: np.ndarray, batch: int, shuffle_seed: int | None) -> tf.data.Dataset:
    """The tf.data input pipeline: uint8 images -> float32 batches, shuffled when training."""
    dataset = tf.data.Dataset.from_tensor_slices((x[..., np.newaxis], y.astype(np.float32)))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch).map(
        lambda images, labels: (tf.cast(images, tf.float32), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's train and validation metrics to MLflow and prints a progress line."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        metrics = {
            (key if key.startswith("val_") else f"train_{key}"): float(value)
            for key, value in (logs or {}).items()
            if key != "learning_rate"
        }
        mlflow.log_metrics(metrics, step=epoch + 1)
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
    """Log the serving graph (probability and penultimate activations) as ONNX to the active run."""
    both = with_embedding(model)
    both(example)  # Keras exports only models that have been called
    with tempfile.TemporaryDirectory(prefix="pneumo-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        both.export(str(path), format="onnx", verbose=False)
        mlflow.log_artifact(str(path), ONNX_ARTIFACT.rpartition("/")[0])


@task(name="train")
def train(processed: str, params: dict[str, Any], data_version: str, source: str) -> dict[str, str]:
    """Fit the model on the train split, validate on val, log everything to a new MLflow run.

    Returns:
        ``run_id`` and ``model_uri`` (the logged model) of the run.
    """
    cfg, size = params["train"], params["data"]["image_size"]
    keras.utils.set_random_seed(cfg["seed"])
    x_train, y_train = load_split(processed, "train")
    x_val, y_val = load_split(processed, "val")
    model = build_model(size, cfg)
    mlflow.set_experiment(params["registry"]["experiment"])
    with mlflow.start_run(run_name=f"{params['profile']}-{cfg['backbone']}") as run:
        mlflow.log_params(flatten({k: params[k] for k in ("data", "train", "gate")}))
        summary = json.loads((Path(processed) / "summary.json").read_text())
        mlflow.log_dict(summary, "data/summary.json")
        mlflow.log_metric("unreadable_images", summary["unreadable"])
        mlflow.set_tags(
            {
                "profile": params["profile"],
                "data_version": data_version,
                "data_source": source,
                "git_commit": git_commit(),
            }
        )
        print(f"train: {len(y_train)} train / {len(y_val)} val images, backbone {cfg['backbone']}")
        history = model.fit(
            make_dataset(x_train, y_train, cfg["batch_size"], cfg["seed"]),
            validation_data=make_dataset(x_val, y_val, cfg["batch_size"], None),
            epochs=cfg["epochs"],
            shuffle=False,  # the dataset shuffles itself
            callbacks=[
                EpochLogger(cfg["epochs"]),
                keras.callbacks.EarlyStopping(
                    monitor="val_auc", mode="max", patience=cfg["patience"], restore_best_weights=True
                ),
            ],
            verbose=0,
        )
        mlflow.log_dict(history.history, "history.json")
        example = x_val[:1, ..., np.newaxis].astype(np.float32)
        signature = infer_signature(example, model.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(model, name="model", signature=signature, input_example=example)
        log_onnx(model, example)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri}
