"""The served graph in ONNX Runtime: NumPy and onnxruntime only, so a service worker that runs it
imports neither TensorFlow nor MLflow."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable

import numpy as np
import onnxruntime

# batch -> (probabilities, penultimate activations, Grad-CAM maps or None when the graph has none)
Runtime = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def onnx_session_runtime(graph: bytes) -> Runtime:
    """A :data:`Runtime` over an exported graph (``PNEUMO_ONNX_THREADS`` intra-op threads, 0: all cores)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PNEUMO_ONNX_THREADS", "0"))
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        probabilities, activations, *cams = session.run(None, {input_name: batch})
        return probabilities, activations, cams[0] if cams else None

    return run


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
