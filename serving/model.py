"""The model in hand: loaded from the registry alias, followed by polling, swapped atomically."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import tensorflow as tf

from monitoring.features import PCA_ARTIFACT, Projection, embedding_columns, with_embedding
from pneumo.models import load_keras, release_free_memory
from serving.gradcam import GradCam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One registered model version, ready to predict."""

    name: str
    version: str
    alias: str
    threshold: float
    image_size: int
    square: str
    loaded_at: str
    predict_fn: Any = field(repr=False)
    gradcam: GradCam | None = field(repr=False)
    projection: Projection | None = field(repr=False)

    def predict(self, prepared: np.ndarray) -> tuple[float, dict[str, float] | None]:
        """Probability of pneumonia for one prepared ``(size, size)`` uint8 image, and its embedding."""
        batch = tf.constant(prepared[np.newaxis, :, :, np.newaxis], tf.float32)
        probability, activations = self.predict_fn(batch)
        embedding = None
        if self.projection is not None:
            embedding = embedding_columns(self.projection.project(activations.numpy())[0])
        return float(probability.numpy().reshape(-1)[0]), embedding


def load_version(name: str, alias: str, version: Any) -> LoadedModel:
    """Download a model version and compile its inference (and Grad-CAM) functions."""
    keras_model = load_keras(f"models:/{name}/{version.version}")
    size = int(version.tags["image_size"])
    both = with_embedding(keras_model)
    predict_fn = tf.function(
        lambda x: both(x, training=False),
        input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)],
    )
    loaded = LoadedModel(
        name=name,
        version=str(version.version),
        alias=alias,
        threshold=float(version.tags["threshold"]),
        image_size=size,
        square=version.tags.get("square", "crop"),
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        predict_fn=predict_fn,
        gradcam=GradCam.for_model(keras_model),
        projection=_projection(version.run_id),
    )
    loaded.predict(np.zeros((size, size), np.uint8))  # trace before the first request does
    release_free_memory()
    return loaded


def _projection(run_id: str) -> Projection | None:
    """The embedding PCA logged with the version's run (None for versions trained without one)."""
    try:
        return Projection.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{PCA_ARTIFACT}"))
    except Exception as error:
        log.warning("no embedding projection for run %s (%s): embeddings are not recorded", run_id, error)
        return None


class ModelHolder:
    """Holds the current model and replaces it when the alias moves.

    Requests take ``holder.current`` once and use that object to the end, so a swap never
    disturbs a request in flight.
    """

    def __init__(self, name: str, alias: str, on_swap: Callable[[LoadedModel], None] | None = None) -> None:
        self.name, self.alias = name, alias
        self.on_swap = on_swap
        self.current: LoadedModel | None = None
        self.registry_reachable: bool | None = None
        self.last_check: str | None = None
        self.last_error: str | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Check the alias; load and swap in its version if it changed. True when swapped."""
        self.last_check = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(self.name, self.alias)
        except Exception as error:  # unreachable registry, missing alias: keep what we have
            self.registry_reachable = False
            self.last_error = f"{type(error).__name__}: {error}"[:500]
            log.warning("registry check failed, keeping model %s: %s", self._in_hand(), self.last_error)
            return False
        self.registry_reachable, self.last_error = True, None
        with self._load_lock:
            if self.current is not None and self.current.version == str(version.version):
                return False
            started = time.monotonic()
            try:
                loaded = load_version(self.name, self.alias, version)
            except Exception as error:
                self.last_error = f"loading v{version.version} failed: {error}"[:500]
                log.exception(
                    "could not load %s v%s; keeping %s", self.name, version.version, self._in_hand()
                )
                return False
            previous, self.current = self.current, loaded  # one reference assignment: atomic
        if self.on_swap is not None:
            self.on_swap(loaded)
        log.info(
            "serving %s v%s (was %s), loaded in %.1fs",
            self.name,
            loaded.version,
            previous.version if previous else "none",
            time.monotonic() - started,
        )
        return True

    def _in_hand(self) -> str:
        return f"v{self.current.version}" if self.current else "none"

    def start_polling(self, interval_s: float) -> threading.Thread:
        """Follow the alias in a daemon thread every ``interval_s`` seconds."""

        def poll() -> None:
            while not self._stop.wait(interval_s):
                self.refresh()

        thread = threading.Thread(target=poll, name="model-poller", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """End the polling thread."""
        self._stop.set()
