"""The served graph in ONNX Runtime: NumPy and onnxruntime only, so a service worker that runs it
imports neither TensorFlow nor MLflow."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable

import numpy as np
import onnxruntime

# batch -> (probabilities, penultimate activations, Grad-CAM maps or None when the graph has none)
Runtime = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def onnx_session_runtime(graph: bytes) -> Runtime:
    """A :data:`Runtime` over an exported graph.

    ``PNEUMO_ONNX_THREADS`` intra-op threads per run (0: all cores), and at most
    ``PNEUMO_ONNX_RUNS`` runs at once (2): a run already spreads over every core, and each
    concurrent run holds its own activations. Measured with DenseNet121 on 2 cores, 8 request
    threads decoding 1024-pixel PNGs: 2 runs at once used 75 MB less per worker than 8, for 10-20%
    less throughput; 1 run, 10% less again. (Intra-op threads that do not spin served more under
    that load, but added a wake-up to each of DenseNet's ~400 operators: 1.4x the latency at c=1.)
    Batching concurrent requests into one run was tried and dropped: alone, a batch of 4 runs at
    23 images/s against 16 for single runs, but under 8 request threads that decode their PNGs
    (17 ms each) the CPU is full either way (19.2 against 18.9 requests/s) and the batch's
    activations cost 70 MB more.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PNEUMO_ONNX_THREADS", "0"))
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    slots = threading.BoundedSemaphore(max(1, int(os.environ.get("PNEUMO_ONNX_RUNS", "2"))))

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        with slots:
            probabilities, activations, *cams = session.run(None, {input_name: batch})
        return probabilities, activations, cams[0] if cams else None

    return run


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_batches(run: Runtime, prepared: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(N,)`` and penultimate activations ``(N, units)`` of prepared uint8 images
    ``(N, size, size)``, ``batch`` images per run."""
    outputs = [run(np.asarray(prepared[start : start + batch], np.float32)[..., np.newaxis])[:2]
               for start in range(0, len(prepared), batch)]  # fmt: skip
    probabilities = np.concatenate([np.asarray(p).reshape(-1) for p, _ in outputs])
    return probabilities, np.concatenate([np.asarray(a) for _, a in outputs])
