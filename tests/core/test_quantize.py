"""pneumo.quantize: the int8 graph follows the float one, and the check refuses one that does not."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest

from pneumo.config import load_params
from pneumo.network import build_network, make_dataset, serving_graph
from pneumo.quantize import agreement, quantize, serve_int8
from pneumo.runtime import onnx_session_runtime, run_batches

RULES = load_params()["export"]


def bright_patches(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, 32, 32), dtype=np.uint8)
    y = np.arange(n) % 2
    x[y == 1, 8:24, 8:24] += 150  # a bright patch marks the positives
    return x, y


@pytest.mark.slow
def test_int8_graph_runs_the_same_outputs_close_to_the_float_graph():
    x, y = bright_patches(64, 0)
    keras.utils.set_random_seed(0)
    model = build_network(32, load_params("test")["train"])
    model.fit(make_dataset(x, y, 16, 0), epochs=10, verbose=0, shuffle=False)
    graph = serving_graph(model)
    graph(x[:1, ..., np.newaxis].astype(np.float32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        graph.export(str(path), format="onnx", verbose=False)
        float_graph = path.read_bytes()
    int8_graph = quantize(float_graph, x[:32], RULES["int8_ops"])
    assert len(int8_graph) < len(float_graph)  # int8 weights

    unseen, labels = bright_patches(40, 1)
    float_p, float_a = run_batches(onnx_session_runtime(float_graph), unseen)
    int8_p, int8_a = run_batches(onnx_session_runtime(int8_graph), unseen)
    assert int8_p.shape == float_p.shape == (40,) and int8_a.shape == float_a.shape
    assert np.abs(int8_p - float_p).max() < 0.1
    _, _, cams = onnx_session_runtime(int8_graph)(unseen[:2, ..., np.newaxis].astype(np.float32))
    assert cams is not None and cams.shape[0] == 2 and cams.min() >= 0 and cams.max() <= 1 + 1e-6

    judged = agreement(labels, {"original": float_p}, {"original": int8_p}, 0.5)
    assert judged["int8_agreement"] >= 0.95 and judged["int8_test_auc"] > 0.9


def test_agreement_counts_decisions_over_every_condition():
    y = np.array([0, 1, 0, 1])
    float_scores = {"original": np.array([0.1, 0.9, 0.2, 0.8]), "gamma": np.array([0.1, 0.9, 0.45, 0.8])}
    int8_scores = {"original": np.array([0.12, 0.88, 0.2, 0.8]), "gamma": np.array([0.1, 0.9, 0.55, 0.8])}
    judged = agreement(y, float_scores, int8_scores, 0.5)
    assert judged["int8_agreement"] == pytest.approx(7 / 8)  # one decision of eight flipped
    assert judged["int8_max_abs_difference"] == pytest.approx(0.1)
    assert judged["int8_test_sensitivity"] == 1.0 and judged["int8_test_specificity"] == 1.0


def test_int8_is_served_only_when_it_agrees_and_loses_nothing():
    float_metrics = {"auc": 0.95, "sensitivity": 0.95, "specificity": 0.80}
    faithful = {"int8_agreement": 0.995, "int8_test_auc": 0.949, "int8_test_sensitivity": 0.95,
                "int8_test_specificity": 0.80}  # fmt: skip
    assert serve_int8(faithful, float_metrics, RULES)
    assert not serve_int8({**faithful, "int8_agreement": 0.98}, float_metrics, RULES)
    assert not serve_int8({**faithful, "int8_test_sensitivity": 0.90}, float_metrics, RULES)
    assert not serve_int8({}, float_metrics, RULES)  # no int8 graph: the float one
