"""The int8 serving graph: ONNX Runtime's static quantization of the exported float graph, and the
check that decides whether it may be served in the float graph's place.

Why: on a CPU the served DenseNet121 spends ~90% of a request in the network. Quantized to int8
(weights per channel, activations with ranges from training images, QDQ format), its convolutions,
ReLUs and classifier run ~2x faster in ONNX Runtime on this machine's AVX-512 VNNI cores (35 -> 17 ms
per image) and decided as the float model on 99.6% of the test images and their degraded copies
(test AUC 0.971 -> 0.970). Quantizing every operator was 3x faster, but the model then decided
unlike the float model on 4-7% of them (the errors of DenseNet's many concatenations, pools and
float batch normalisations add up). The numbers change with every model, so a quantized graph
is served only when it decides as the float model does (:func:`agreement`) on the test split and
on its degraded copies (``pneumo.degrade``): the evaluate task judges it, the registry records
which graph the version serves (``pneumo.contract.VersionSpec.graph``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from pneumo.images import model_input
from pneumo.metrics import binary_metrics


def quantize(graph: bytes, calibration: np.ndarray, ops: list[str]) -> bytes:
    """The int8 (QDQ) version of an exported float graph.

    Args:
        graph: the float ONNX graph (``pneumo.contract.ONNX_ARTIFACT``).
        calibration: prepared uint8 training images ``(N, size, size)`` whose activations set the
            int8 ranges (never test or validation images: the check must judge unseen ones).
        ops: the ONNX operator types to quantize (``export.int8_ops``); the others stay float.
    """

    class Images(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self._feeds = iter({name: model_input(image[np.newaxis])} for image in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="pneumo-int8-") as folder:
        source, prepared, target = (Path(folder) / name for name in ("float.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(graph)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        quantize_static(
            str(prepared),
            str(target),
            Images(input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,  # (the calibration keeps per-channel minima and maxima only)
            op_types_to_quantize=list(ops),
        )
        return target.read_bytes()


def agreement(
    y: np.ndarray, float_scores: dict[str, np.ndarray], int8_scores: dict[str, np.ndarray], threshold: float
) -> dict[str, float]:
    """How closely the int8 graph follows the float model, over every set of images scored.

    Args:
        y: the labels (the same images under each condition).
        float_scores: ``{condition: probabilities}`` of the float model (``original`` first).
        int8_scores: the same, of the int8 graph.
        threshold: the version's decision threshold.

    Returns:
        ``int8_agreement`` (share of decisions at ``threshold`` that are the same, over all
        conditions), ``int8_max_abs_difference`` (of the probabilities), and the int8 graph's
        ``int8_test_auc``/``_sensitivity``/``_specificity`` on the original test images.
    """
    same, differences = [], []
    for condition, expected in float_scores.items():
        got = int8_scores[condition]
        same.append((expected >= threshold) == (got >= threshold))
        differences.append(np.abs(expected - got))
    metrics = binary_metrics(y, int8_scores["original"], threshold)
    return {
        "int8_agreement": float(np.concatenate(same).mean()),
        "int8_max_abs_difference": float(np.concatenate(differences).max()),
        **{f"int8_test_{name}": metrics[name] for name in ("auc", "sensitivity", "specificity")},
    }


def serve_int8(results: dict[str, Any], float_metrics: dict[str, float], rules: dict[str, Any]) -> bool:
    """Whether the int8 graph may be served: it decides as the float model on at least
    ``rules["min_agreement"]`` of the images, and its test AUC, sensitivity and specificity are
    at most ``rules["max_metric_drop"]`` below the float model's."""
    if "int8_agreement" not in results or results["int8_agreement"] < rules["min_agreement"]:
        return False
    return all(float_metrics[name] - results[f"int8_test_{name}"] <= rules["max_metric_drop"]
               for name in ("auc", "sensitivity", "specificity"))  # fmt: skip
