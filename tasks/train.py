"""Train: a Keras transfer-learning classifier, tracked in MLflow."""

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
import tensorflow as tf
from keras import layers
from mlflow.models import infer_signature
from prefect import task

from monitoring.features import ONNX_ARTIFACT, with_embedding
from pneumo.augment import random_view
from pneumo.config import ROOT
from pneumo.services import until_reachable
from serving.gradcam import FEATURE_POOL
from tasks.preprocess import load_contexts, load_split

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
        raise ValueError(f"unknown backbone {name!r}")  # refused earlier by pneumo.validation
    if weights not in ("none", "imagenet"):
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file {weights} not found")
        base.load_weights(weights)
    return base


def _small_cnn(x: keras.KerasTensor, filters: list[int], convs_per_block: int) -> keras.KerasTensor:
    """Blocks of ``convs_per_block`` 3x3 conv + BatchNorm + ReLU, each block ending in 2x2 max-pooling."""
    for width in filters:
        for _ in range(convs_per_block):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    return x


def _all_layers(layer: keras.Layer):
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _all_layers(sub)


def build_model(size: int, train: dict[str, Any], steps: int | None = None) -> keras.Model:
    """Backbone + dense head with a sigmoid output, compiled with Adam and binary cross-entropy.

    The input is a grayscale image with pixel values in 0..255; the first layer normalises it to
    [0, 1], so training and serving share one preprocessing path inside the model.

    Args:
        size: the input side in pixels.
        train: the ``train`` section of params.yaml.
        steps: all training steps; with ``lr_schedule: cosine`` the rate decays to 0 over them.
    """
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="normalise")(inputs)
    if train["backbone"] == "small_cnn":
        feature_map = _small_cnn(x, train["filters"], train["convs_per_block"])
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
    rate = train["learning_rate"]
    if train["lr_schedule"] == "cosine":
        if not steps:
            raise ValueError("lr_schedule cosine needs the number of training steps")
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
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


def balanced_order(y: np.ndarray, rng: np.random.Generator, balance: bool) -> np.ndarray:
    """One epoch's example order: every example once, plus random minority repeats up to parity."""
    order = np.arange(len(y))
    counts = np.bincount(y, minlength=2)
    if balance and counts.min() < counts.max():
        minority = np.flatnonzero(y == np.argmin(counts))
        order = np.concatenate([order, rng.choice(minority, counts.max() - counts.min(), replace=True)])
    return rng.permutation(order)


def augmented_dataset(
    contexts: list[np.ndarray], y: np.ndarray, size: int, batch: int, data: dict[str, Any], seed: int
) -> tuple[tf.data.Dataset, int]:
    """Fresh random views of the context images every epoch (balanced by repeats of the minority).

    Returns:
        The dataset and its number of examples per epoch.
    """
    rng = np.random.default_rng(seed)
    aug = data["augment"]

    def views():
        for index in balanced_order(y, rng, data["balance"]):
            yield random_view(contexts[index], size, rng, aug)[..., np.newaxis], np.float32(y[index])

    per_epoch = len(balanced_order(y, np.random.default_rng(0), data["balance"]))
    signature = (tf.TensorSpec((size, size, 1), tf.uint8), tf.TensorSpec((), tf.float32))
    dataset = tf.data.Dataset.from_generator(views, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(per_epoch)).batch(batch)
    dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    return dataset.prefetch(2), per_epoch


def training_data(processed: str, params: dict[str, Any]) -> tuple[tf.data.Dataset, int]:
    """The training split as a dataset (augmented online or the stored balanced arrays) and its size."""
    data, cfg = params["data"], params["train"]
    if data["augment"]["online"]:
        contexts, y = load_contexts(processed)
        return augmented_dataset(contexts, y, data["image_size"], cfg["batch_size"], data, cfg["seed"])
    x, y = load_split(processed, "train")
    return make_dataset(x, y, cfg["batch_size"], cfg["seed"]), len(y)


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
    model = build_model(size, cfg, steps=math.ceil(n_train / cfg["batch_size"]) * cfg["epochs"])
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
        mlflow.log_dict(history.history, "history.json")
        example = x_val[:1, ..., np.newaxis].astype(np.float32)
        signature = infer_signature(example, model.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(model, name="model", signature=signature, input_example=example)
        log_onnx(model, example)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri}
