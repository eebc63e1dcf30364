"""pneumo.network: the model recipe builds offline, normalises inside, and learns."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumo.config import load_params
from pneumo.network import augmented_dataset, balanced_order, build_network, class_weights, make_dataset
from pneumo.validation import BACKBONES


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbones_build_offline_with_one_probability(backbone: str):
    train = {**load_params()["train"], "backbone": backbone}
    model = build_network(64, train)
    out = model.predict(np.full((2, 64, 64, 1), 128, np.float32), verbose=0)
    assert out.shape == (2, 1)
    assert np.all((out >= 0) & (out <= 1))
    assert model.input_shape == (None, 64, 64, 1)


def test_model_normalises_inside():
    model = build_network(32, {**load_params("test")["train"]})
    assert model.layers[1].name == "normalise"
    assert model.layers[1].scale == pytest.approx(1 / 255)


def test_unknown_weights_file_is_a_clear_error():
    train = {**load_params()["train"], "backbone": "mobilenet_v3_small", "weights": "/nonexistent.h5"}
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        build_network(64, train)


@pytest.mark.slow
def test_small_cnn_learns_a_separable_task():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(64, 32, 32), dtype=np.uint8)
    y = np.arange(64) % 2
    x[y == 1, 8:24, 8:24] += 150  # a bright patch marks the positives
    keras.utils.set_random_seed(0)
    model = build_network(32, load_params("test")["train"])
    before = model.evaluate(make_dataset(x, y, 16, None), verbose=0)[0]
    # Enough steps for the BatchNorm moving statistics to catch up with the weights.
    model.fit(make_dataset(x, y, 16, 0), epochs=30, verbose=0, shuffle=False)
    loss, _, auc, *_ = model.evaluate(make_dataset(x, y, 16, None), verbose=0)
    assert loss < before and auc > 0.9


@pytest.mark.slow
def test_xray_recipe_learns_from_augmented_views():
    params = load_params("xray", {"data": {"image_size": 64}, "train": {"epochs": 6}})
    rng = np.random.default_rng(0)
    contexts = [rng.integers(0, 60, size=(64, 96), dtype=np.uint8) for _ in range(48)]
    y = np.array([0, 1] * 20 + [0] * 8)  # imbalanced: balanced while training
    for ctx, label in zip(contexts, y, strict=True):
        if label:
            ctx[16:48, 24:72] += 150  # a bright patch marks the positives, wherever the crop falls
    keras.utils.set_random_seed(0)
    dataset, n = augmented_dataset(contexts, y, 64, 16, params["data"], seed=0)
    assert n == 56
    images, labels, weights = next(iter(dataset))
    assert set(labels.numpy().tolist()) <= {0.0, 1.0} and set(weights.numpy().tolist()) == {1.0}
    assert images.shape == (16, 64, 64, 1) and images.dtype == np.float32
    model = build_network(64, params["train"], steps=4 * 6)
    model.fit(dataset, epochs=6, verbose=0, shuffle=False)
    assert float(model.optimizer.learning_rate) < params["train"]["learning_rate"] / 10  # cosine decayed
    x = np.stack([c[:, 16:80] for c in contexts])[..., np.newaxis].astype(np.float32)
    assert roc_auc_score(y, model.predict(x, verbose=0).ravel()) > 0.9


def test_balanced_order_reaches_parity_and_keeps_every_example():
    y = np.array([0] * 9 + [1] * 3)
    order = balanced_order(y, np.random.default_rng(0), balance=True)
    assert np.bincount(y[order]).tolist() == [9, 9]
    assert set(order.tolist()) == set(range(12))
    assert sorted(balanced_order(y, np.random.default_rng(0), balance=False).tolist()) == list(range(12))


def test_balanced_class_weights_make_both_classes_count_equally_without_copies():
    y = np.array([0] * 25 + [1] * 75)  # Kermany's 1 : 3
    weights = class_weights(y, "balanced")
    assert weights[y].sum() == pytest.approx(len(y))  # the loss keeps its scale
    assert weights[0] * 25 == pytest.approx(weights[1] * 75)  # each class weighs half
    assert class_weights(y, "none").tolist() == [1.0, 1.0]
    assert class_weights(np.ones(5, int), "balanced").tolist() == [1.0, 1.0]  # one class: nothing to weigh
    contexts = [np.full((40, 40), 100, np.uint8)] * len(y)
    params = load_params("xray", {"data": {"balance": False}, "train": {"class_weight": "balanced"}})
    dataset, n = augmented_dataset(contexts, y, 32, 100, params["data"], seed=0, weighting="balanced")
    _, labels, sample_weights = next(iter(dataset))
    assert n == 100  # every image once: no minority copies
    assert np.allclose(sample_weights.numpy(), weights[labels.numpy().astype(int)])
    _, labels, sample_weights = next(
        iter(make_dataset(np.zeros((100, 8, 8), np.uint8), y, 100, None, weights))
    )
    assert np.allclose(sample_weights.numpy(), weights[labels.numpy().astype(int)])
