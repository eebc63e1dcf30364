"""Finding and loading registered models: the one helper everything uses to reach the registry."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime
from mlflow.exceptions import MlflowException

from pneumo.contract import ONNX_ARTIFACT

log = logging.getLogger(__name__)
# batch -> (probabilities, penultimate activations, Grad-CAM maps or None when the graph has none)
Runtime = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def load_keras(model_uri: str) -> Any:
    """Download an MLflow TensorFlow/Keras model and load it for inference only.

    The download goes to a private folder removed once the weights are in memory (MLflow's default
    leaves a copy in /tmp per load), and the optimizer state is not restored (``compile=False``).
    """
    with tempfile.TemporaryDirectory(prefix="pneumo-model-") as folder:
        model = mlflow.tensorflow.load_model(
            model_uri, dst_path=folder, keras_model_kwargs={"compile": False}
        )
    release_free_memory()
    return model


def onnx_runtime(run_id: str) -> Runtime | None:
    """ONNX Runtime on the version's exported graph; None when the run has no ONNX artifact."""
    folder, _, _ = ONNX_ARTIFACT.rpartition("/")
    if ONNX_ARTIFACT not in {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, folder)}:
        log.warning("run %s has no ONNX graph: serving with TensorFlow", run_id)
        return None
    # A failing download raises: the holder keeps the model in hand and tries again later.
    with tempfile.TemporaryDirectory(prefix="pneumo-onnx-") as scratch:
        path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{ONNX_ARTIFACT}", dst_path=scratch)
        graph = Path(path).read_bytes()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("PNEUMO_ONNX_THREADS", "0"))  # 0: all cores
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        probabilities, activations, *cams = session.run(None, {input_name: batch})
        return probabilities, activations, cams[0] if cams else None

    return run


NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def alias_version(name: str, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when the alias (or the model) does not exist.

    Raises:
        Exception: anything else, e.g. the registry cannot be reached.
    """
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in NOT_FOUND_CODES:
            return None
        raise


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
