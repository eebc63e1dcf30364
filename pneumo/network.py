"""The model recipe: the network, its input pipelines, and how to fit and call it.

One definition for the training task, the cross-validated threshold, the gate, ``pneumo evaluate``
and the benchmarks. The network takes grayscale pixel values 0..255 and normalises them itself, so
training and serving share one preprocessing path inside the model; the layers other parts of the
system reach by name are the registry contract's (:mod:`pneumo.contract`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from sklearn.model_selection import StratifiedGroupKFold

from pneumo.augment import random_view
from pneumo.contract import EMBEDDING_LAYER, FEATURE_POOL, INPUT_LAYER, OUTPUT_LAYER
from pneumo.images import model_input
from pneumo.processed import iter_labels, iter_parts, read_contexts

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


def build_network(size: int, recipe: dict[str, Any], steps: int | None = None) -> keras.Model:
    """Backbone + dense head with a sigmoid output, compiled with Adam and binary cross-entropy.

    The input is a grayscale image with pixel values in 0..255; the first layer normalises it to
    [0, 1], so training and serving share one preprocessing path inside the model.

    Args:
        size: the input side in pixels.
        recipe: the ``train`` section of params.yaml.
        steps: all training steps; with ``lr_schedule: cosine`` the rate decays to 0 over them.
    """
    inputs = keras.Input((size, size, 1), name=INPUT_LAYER)
    x = layers.Rescaling(1.0 / 255.0, name="normalise")(inputs)
    if recipe["backbone"] == "small_cnn":
        feature_map = _small_cnn(x, recipe["filters"], recipe["convs_per_block"])
    else:
        rgb = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        if recipe["backbone"] == "densenet121":
            # ImageNet statistics as constants of a Rescaling layer (a Normalization layer's would
            # become inputs of the exported ONNX graph).
            rgb = layers.Rescaling(IMAGENET_SCALE, offset=IMAGENET_OFFSET, name="imagenet")(rgb)
        else:
            rgb = layers.Rescaling(2.0, offset=-1.0)(rgb)
        feature_map = _backbone(recipe["backbone"], size, recipe["weights"])(rgb)
    # The last convolutional feature map enters this named pooling layer: Grad-CAM starts there.
    features = layers.GlobalAveragePooling2D(name=FEATURE_POOL)(feature_map)
    x = layers.Dense(recipe["head_units"], activation="relu", name=EMBEDDING_LAYER)(features)
    x = layers.Dropout(recipe["dropout"])(x)
    outputs = layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(x)
    model = keras.Model(inputs, outputs, name=f"pneumo_{recipe['backbone']}")
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = recipe["bn_momentum"]
    rate = recipe["learning_rate"]
    if recipe["lr_schedule"] == "cosine":
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


def class_weights(y: np.ndarray, mode: str) -> np.ndarray:
    """The loss weight of each class (index 0 and 1): ``balanced`` weighs each class inversely to its
    frequency in ``y`` (both classes then count equally, with no image copied), ``none`` weighs 1."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=2).astype(np.float64)
    if mode == "none" or counts.min() == 0:
        return np.ones(2, np.float32)
    return (counts.sum() / (2 * counts)).astype(np.float32)


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch: int, shuffle_seed: int | None, weights: np.ndarray | None = None
) -> tf.data.Dataset:
    """The tf.data input pipeline: uint8 images -> float32 batches, shuffled when training; with
    ``weights`` (:func:`class_weights`), each example also carries its class's loss weight."""
    labels = y.astype(np.float32)
    parts = (x[..., np.newaxis], labels) if weights is None else (x[..., np.newaxis], labels, weights[y])
    dataset = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch).map(
        lambda images, *rest: (tf.cast(images, tf.float32), *rest), num_parallel_calls=tf.data.AUTOTUNE
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
    contexts: list[np.ndarray],
    y: np.ndarray,
    size: int,
    batch: int,
    data: dict[str, Any],
    seed: int,
    weighting: str = "none",
) -> tuple[tf.data.Dataset, int]:
    """Fresh random views of context images held in memory: :func:`views_dataset` of one part."""
    return views_dataset([lambda: (contexts, y)], [y], size, batch, data, seed, weighting)


def views_dataset(
    parts: Sequence[Callable[[], tuple[list[np.ndarray], np.ndarray]]],
    labels: Sequence[np.ndarray],
    size: int,
    batch: int,
    data: dict[str, Any],
    seed: int,
    weighting: str = "none",
) -> tuple[tf.data.Dataset, int]:
    """Fresh random views of the context images every epoch, each with its class's loss weight
    (:func:`class_weights` of ``weighting``), balanced by repeats of the minority with ``data.balance``.

    Args:
        parts: loaders of the context images and labels of each part, called one at a time, in a
            new random order every epoch (only one part is in memory).
        labels: each part's labels, to count the epoch and weigh the classes without loading pixels.

    Returns:
        The dataset and its number of examples per epoch.
    """
    rng = np.random.default_rng(seed)
    aug = data["augment"]
    weights = class_weights(np.concatenate(labels), weighting)

    def views():
        for part in rng.permutation(len(parts)):
            contexts, y = parts[part]()
            for index in balanced_order(y, rng, data["balance"]):
                view = random_view(contexts[index], size, rng, aug)[..., np.newaxis]
                yield view, np.float32(y[index]), weights[y[index]]

    per_epoch = sum(len(balanced_order(y, np.random.default_rng(0), data["balance"])) for y in labels)
    signature = (tf.TensorSpec((size, size, 1), tf.uint8), tf.TensorSpec((), tf.float32),
                 tf.TensorSpec((), tf.float32))  # fmt: skip
    dataset = tf.data.Dataset.from_generator(views, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(per_epoch)).batch(batch)
    dataset = dataset.map(lambda images, labels, w: (tf.cast(images, tf.float32), labels, w))
    return dataset.prefetch(2), per_epoch


def parts_dataset(
    processed: str, split: str, size: int, batch: int, seed: int | None, weighting: str | None = None
) -> tuple[tf.data.Dataset, int]:
    """Batches of the stored images of a split, streamed one part at a time (memory does not grow
    with the data set): with ``seed``, parts in a new random order every epoch and rows shuffled
    within each (every part is a random sample); without, in stored order. With ``weighting``, each
    example carries its class's loss weight (:func:`class_weights`).

    Returns:
        The dataset and its number of examples.
    """
    labels = [y for _, y in iter_labels(processed, split)]
    weights = None if weighting is None else class_weights(np.concatenate(labels), weighting)
    epochs = itertools.count()

    def batches():
        rng = None if seed is None else np.random.default_rng([seed, next(epochs)])
        order = None if rng is None else rng.permutation(len(labels))
        for x, y in iter_parts(processed, split, order):
            rows = np.arange(len(y)) if rng is None else rng.permutation(len(y))
            for start in range(0, len(rows), batch):
                pick = rows[start : start + batch]
                chosen = (x[pick][..., np.newaxis], y[pick].astype(np.float32))
                yield chosen if weights is None else (*chosen, weights[y[pick]])

    signature = (tf.TensorSpec((None, size, size, 1), tf.uint8), tf.TensorSpec((None,), tf.float32))
    if weights is not None:
        signature = (*signature, tf.TensorSpec((None,), tf.float32))
    count = sum(math.ceil(len(y) / batch) for y in labels)
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    dataset = dataset.map(lambda images, *rest: (tf.cast(images, tf.float32), *rest))
    return dataset.prefetch(2), sum(len(y) for y in labels)


def training_data(processed: str, params: dict[str, Any]) -> tuple[tf.data.Dataset, int]:
    """The training split, streamed part by part (augmented online, or the stored balanced images),
    and its number of examples per epoch."""
    data, cfg = params["data"], params["train"]
    if data["augment"]["online"]:
        stored = list(iter_labels(processed, "train_context"))
        loaders = [partial(read_contexts, path) for path, _ in stored]
        return views_dataset(loaders, [y for _, y in stored], data["image_size"], cfg["batch_size"],
                             data, cfg["seed"], cfg["class_weight"])  # fmt: skip
    size, batch = data["image_size"], cfg["batch_size"]
    return parts_dataset(processed, "train", size, batch, cfg["seed"], cfg["class_weight"])


def patient_folds(
    y: np.ndarray, patients: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit_rows, held_rows)`` of each fold: stratified by label, no patient in two folds."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, patients))


def fit_on_contexts(
    contexts: list[np.ndarray],
    y: np.ndarray,
    params: dict[str, Any],
    seed: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
):
    """Train a fresh model of the recipe on context images, with online augmentation, all epochs.

    Args:
        contexts: the training images' context images (:mod:`pneumo.augment`).
        y: their labels.
        params: the parameters of the recipe.
        seed: seeds weights, order and augmentation.
        callbacks: Keras callbacks (progress reports).

    Returns:
        The trained Keras model.
    """
    data, cfg = params["data"], params["train"]
    keras.utils.set_random_seed(seed)
    dataset, n = augmented_dataset(
        contexts, y, data["image_size"], cfg["batch_size"], data, seed, cfg["class_weight"]
    )
    model = build_network(data["image_size"], cfg, steps=math.ceil(n / cfg["batch_size"]) * cfg["epochs"])
    model.fit(
        dataset, epochs=cfg["epochs"], verbose=0, shuffle=False, callbacks=callbacks
    )  # views come shuffled
    return model


def predict(model: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities of pneumonia for prepared uint8 images ``(N, size, size)``."""
    return model.predict(model_input(x), batch_size=batch, verbose=0).reshape(-1)


class GradCamMap(layers.Layer):
    """Grad-CAM of this project's head, in closed form, so that it exports into the ONNX graph.

    The head is ``GlobalAveragePooling2D -> Dense(relu) -> Dropout -> Dense(1, sigmoid)``. The
    gradient of the logit with respect to feature map cell ``(i, j, k)`` is ``g_k / (h * w)`` with
    ``g = W1 @ (relu'(z) * w2)``, the same at every cell, so Grad-CAM's channel weights are ``g`` up
    to a positive factor that the normalisation removes (as is the sigmoid's, for a map taken from
    the probability). The map is ``relu(sum_k g_k A_ijk)`` scaled to a maximum of 1.
    """

    def __init__(self, hidden_kernel: np.ndarray, output_kernel: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._w1 = np.asarray(hidden_kernel, np.float32)  # (channels, units)
        self._w2 = np.asarray(output_kernel, np.float32).reshape(-1)  # (units,)

    def call(self, feature_map, hidden):
        active = keras.ops.cast(keras.ops.greater(hidden, 0.0), "float32")  # relu'(z): relu(z) > 0
        weights = keras.ops.matmul(active * self._w2, keras.ops.transpose(self._w1))  # (batch, channels)
        cam = keras.ops.relu(keras.ops.sum(feature_map * weights[:, None, None, :], axis=-1))
        return cam / (keras.ops.max(cam, axis=(1, 2), keepdims=True) + 1e-8)


def serving_graph(model: keras.Model) -> keras.Model:
    """The graph the service runs: ``[probability, penultimate activations, Grad-CAM map]``, the
    map computed by :class:`GradCamMap` in the same pass (no gradient, no TensorFlow at serving).

    Raises:
        ValueError: the model's head is not the one :func:`build_network` makes (no closed form).
    """
    pool, hidden, output = (model.get_layer(name) for name in (FEATURE_POOL, EMBEDDING_LAYER, OUTPUT_LAYER))
    dropout = [layer for layer in model.layers if layer._inbound_nodes and layer.input is hidden.output]
    expected = [
        isinstance(pool, layers.GlobalAveragePooling2D) and hidden.input is pool.output,
        hidden.activation is keras.activations.relu and output.activation is keras.activations.sigmoid,
        len(dropout) == 1 and isinstance(dropout[0], layers.Dropout) and output.input is dropout[0].output,
    ]
    if not all(expected):
        raise ValueError(
            f"{model.name} does not end in the head build_network makes: no closed-form Grad-CAM"
        )
    cam = GradCamMap(hidden.kernel.numpy(), output.kernel.numpy(), name="gradcam")(pool.input, hidden.output)
    return keras.Model(model.inputs, [model.outputs[0], hidden.output, cam], name=f"{model.name}_serving")
