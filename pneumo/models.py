"""Loading registered Keras models for inference."""

from __future__ import annotations

import contextlib
import ctypes
import tempfile
from typing import Any


def load_keras(model_uri: str) -> Any:
    """Download an MLflow TensorFlow/Keras model and load it for inference only.

    The download goes to a private folder removed once the weights are in memory (MLflow's default
    leaves a copy in /tmp per load), and the optimizer state is not restored (``compile=False``).
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="pneumo-model-") as folder:
        model = mlflow.tensorflow.load_model(
            model_uri, dst_path=folder, keras_model_kwargs={"compile": False}
        )
    release_free_memory()
    return model


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
