"""The model in hand: loaded from the registry alias, followed by polling, swapped atomically."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pneumo.contract import INT8_ARTIFACT, ONNX_ARTIFACT, PCA_ARTIFACT, VersionSpec, platt
from pneumo.monitoring.features import Projection, embedding_columns, with_embedding
from pneumo.registry import alias_version, artifact
from pneumo.runtime import Runtime, onnx_session_runtime, release_free_memory

log = logging.getLogger(__name__)


class LazyGradCam:
    """Grad-CAM with TensorFlow, built on first use, for versions whose ONNX graph has no map: the
    ONNX path never imports TensorFlow otherwise."""

    def __init__(self, model_uri: str, keras_model: Any = None) -> None:
        self._model_uri, self._keras_model = model_uri, keras_model
        self._lock = threading.Lock()
        self._built = False
        self._cam: Any = None

    def cam(self, prepared: np.ndarray) -> np.ndarray | None:
        """The coarse map in [0, 1]; None when the model has no feature map."""
        with self._lock:
            if not self._built:
                from pneumo.models import load_keras  # mlflow: only for versions whose graph has no map
                from pneumo.serving.gradcam import GradCam

                self._cam = GradCam.for_model(self._keras_model or load_keras(self._model_uri))
                self._keras_model, self._built = None, True
        return self._cam.cam(prepared) if self._cam is not None else None


@dataclass(frozen=True)
class LoadedModel:
    """One registered model version, ready to predict."""

    name: str
    version: str
    alias: str
    threshold: float  # the site's (``site``), or the version's own when ``site`` is None
    image_size: int
    square: str
    loaded_at: str
    runtime: str
    run: Runtime = field(repr=False)
    gradcam: LazyGradCam = field(repr=False)
    projection: Projection | None = field(repr=False)
    site: str | None = None  # the site whose threshold ``threshold`` is; None: the version's own
    calibration: tuple[float, float] | None = None  # Platt scaling of the version (its tags)
    explained_by: str = "tensorflow"  # "onnx": the graph computes Grad-CAM with every prediction
    operating_point: dict[str, Any] | None = None  # sensitivity and specificity at ``threshold``
    precision: str = "float32"  # "int8": the quantized graph, served because it passed the check

    def calibrated(self, probability: float) -> float | None:
        """The probability as Platt scaling maps it (None for versions trained without it)."""
        return None if self.calibration is None else float(platt(probability, *self.calibration))

    def predict(self, prepared: np.ndarray) -> tuple[float, dict[str, float] | None, np.ndarray | None]:
        """Probability of pneumonia for one prepared ``(size, size)`` uint8 image, its embedding, and
        its Grad-CAM map when the graph computes one in the same pass (None: see :meth:`cam`)."""
        probabilities, activations, cams = self.run(prepared[np.newaxis, :, :, np.newaxis].astype(np.float32))
        embedding = None
        if self.projection is not None:
            embedding = embedding_columns(self.projection.project(activations)[0])
        return float(np.asarray(probabilities).reshape(-1)[0]), embedding, None if cams is None else cams[0]

    def cam(self, prepared: np.ndarray, computed: np.ndarray | None) -> np.ndarray | None:
        """The Grad-CAM map of an image: the one the graph ``computed`` with the prediction, or, for
        versions whose graph has none, TensorFlow's (:class:`LazyGradCam`)."""
        return computed if computed is not None else self.gradcam.cam(prepared)


def onnx_runtime(run_id: str, path: str = ONNX_ARTIFACT) -> Runtime | None:
    """ONNX Runtime on the version's exported graph ``path`` (the version's ``serving_graph``);
    None when the run has no ONNX artifact."""
    graph = artifact(run_id, path)
    if graph is None:
        log.warning("run %s has no ONNX graph %s: serving with TensorFlow", run_id, path)
        return None
    return onnx_session_runtime(graph)


def keras_runtime(keras_model: Any, size: int) -> Runtime:
    """The Keras model behind one ``tf.function`` (for versions without an ONNX graph)."""
    import tensorflow as tf

    both = with_embedding(keras_model)
    function = tf.function(
        lambda x: both(x, training=False), input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)]
    )

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        probabilities, activations = function(tf.constant(batch))
        return probabilities.numpy(), activations.numpy(), None

    return run


def load_version(name: str, alias: str, version: Any, site: str | None = None) -> LoadedModel:
    """Load a model version: ONNX Runtime when the version has a graph, else TensorFlow.

    With ``site``, the version decides at that site's threshold if it has one
    (:meth:`pneumo.contract.VersionSpec.decision_threshold`).
    """
    spec = VersionSpec.of(version).required(f"{name} v{version.version}")
    threshold, calibrated = _site_threshold(spec, name, version, site)
    uri, size = f"models:/{name}/{version.version}", spec.image_size
    run = onnx_runtime(version.run_id, spec.graph)  # a failing download raises: the holder keeps its model
    if run is not None:
        runtime, gradcam = "onnx", LazyGradCam(uri)
    else:
        from pneumo.models import load_keras  # mlflow and TensorFlow: only for versions without a graph

        keras_model = load_keras(uri)
        runtime, run, gradcam = "tensorflow", keras_runtime(keras_model, size), LazyGradCam(uri, keras_model)
    _, _, cams = run(np.zeros((1, size, size, 1), np.float32))  # warm up before the first request
    loaded = LoadedModel(
        name=name,
        version=str(version.version),
        alias=alias,
        threshold=threshold,
        image_size=size,
        square=spec.square,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        runtime=runtime,
        run=run,
        gradcam=gradcam,
        projection=_projection(version.run_id),
        site=calibrated,
        calibration=spec.calibration,
        explained_by="onnx" if cams is not None else "tensorflow",
        operating_point=spec.operating_point(calibrated),
        precision="int8" if runtime == "onnx" and spec.graph == INT8_ARTIFACT else "float32",
    )
    release_free_memory()
    return loaded


def _site_threshold(spec: VersionSpec, name: str, version: Any, site: str | None) -> tuple[float, str | None]:
    """The threshold to decide with at ``site`` (said in the log when the site has none of its own)."""
    threshold, calibrated = spec.decision_threshold(site)
    if site and calibrated is None:
        log.warning("%s v%s has no threshold for site %s: deciding at the version's own %.4f until "
                    "`pneumo calibrate` stores one", name, version.version, site, threshold)  # fmt: skip
    return threshold, calibrated


def _projection(run_id: str) -> Projection | None:
    """The embedding PCA logged with the version's run (None for versions trained without one)."""
    try:
        return Projection.from_dict(json.loads(artifact(run_id, PCA_ARTIFACT) or b"null"))
    except Exception as error:
        log.warning("no embedding projection for run %s (%s): embeddings are not recorded", run_id, error)
        return None


class ModelHolder:
    """Holds the current model and replaces it when the alias moves.

    Requests take ``holder.current`` once and use that object to the end, so a swap never
    disturbs a request in flight.
    """

    def __init__(
        self,
        name: str,
        alias: str,
        on_swap: Callable[[LoadedModel], None] | None = None,
        site: str | None = None,
    ) -> None:
        self.name, self.alias, self.site = name, alias, site
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
            version = alias_version(self.name, self.alias)
        except Exception as error:  # unreachable registry: keep what we have
            self.registry_reachable = False
            self.last_error = f"{type(error).__name__}: {error}"[:500]
            log.warning("registry check failed, keeping model %s: %s", self._in_hand(), self.last_error)
            return False
        self.registry_reachable = True
        if version is None:  # the registry answered: there is no such alias (yet)
            self.last_error = f"{self.name} has no @{self.alias} version"
            return False
        self.last_error = None
        with self._load_lock:
            if self.current is not None and self.current.version == str(version.version):
                return self._follow_site_threshold(version)
            started = time.monotonic()
            try:
                loaded = load_version(self.name, self.alias, version, self.site)
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

    def _follow_site_threshold(self, version: Any) -> bool:
        """The version in hand, deciding at its site threshold as now stored (``pneumo calibrate``
        may set or change it at any time); a new object, so requests in flight keep theirs."""
        current, spec = self.current, VersionSpec.of(version)
        if spec.decision_threshold(self.site) == (current.threshold, current.site):
            return False  # unchanged: checked every reload interval, said nothing
        threshold, site = _site_threshold(spec, self.name, version, self.site)
        self.current = replace(
            current, threshold=threshold, site=site, operating_point=spec.operating_point(site)
        )
        log.info("%s v%s now decides at %.4f (site %s; was %.4f)", self.name, current.version, threshold,
                 site or "none: the version's own", current.threshold)  # fmt: skip
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
