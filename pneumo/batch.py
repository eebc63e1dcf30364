"""Batch predictions for audits (``pneumo predict``): the service's image path, model and threshold,
over files instead of requests.

Each file goes through :func:`pneumo.images.decode`, :func:`~pneumo.images.check_proportions` and
:func:`~pneumo.images.prepare` exactly as an upload does, and the version runs on the runtime the
service uses (its ONNX graph, or Keras for versions without one). A file the service would refuse
gets a row with the reason instead of a label, so an audit shows every file it was given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pneumo.contract import CHAMPION, VersionSpec, platt
from pneumo.datasets import IMAGE_SUFFIXES
from pneumo.images import ImageError, check_proportions, decode, model_input, prepare
from pneumo.models import load_keras, registered_version
from pneumo.registry import artifact
from pneumo.runtime import Runtime, onnx_session_runtime

COLUMNS = ["file", "label", "probability", "calibrated_probability", "threshold", "site", "model_version",
           "error"]  # fmt: skip


@dataclass(frozen=True)
class BatchModel:
    """A registered version, ready to predict files as the service would."""

    name: str
    version: str
    spec: VersionSpec
    threshold: float
    site: str | None
    run: Runtime


def files_to_predict(inputs: Iterable[Path]) -> list[Path]:
    """The files named, and the image files (.png, .jpg, .jpeg, .dcm) below the folders named, sorted.

    Raises:
        FileNotFoundError: an input that does not exist.
    """
    found: list[Path] = []
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    return found


def load_batch_model(uri: str | None, model_name: str, site: str | None = None) -> BatchModel:
    """The version behind ``uri`` (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; default the
    champion of ``model_name``), deciding at ``site``'s threshold when given.

    Raises:
        LookupError: no such version, or ``site`` is not calibrated on it.
        ValueError: not a registered version's URI, or a version that lacks what serving needs.
    """
    version = registered_version(uri or f"models:/{model_name}@{CHAMPION}")
    name = version.name
    spec = VersionSpec.of(version).required(f"{name} v{version.version}")
    threshold, calibrated = spec.decision_threshold(site)
    if site and calibrated is None:
        raise LookupError(f"{name} v{version.version} has no threshold for site {site!r}: "
                          f"run `pneumo calibrate --site {site} --data DIR` first")  # fmt: skip
    graph = artifact(version.run_id, spec.graph)  # the service's runtime; Keras without a graph
    run = onnx_session_runtime(graph) if graph else _keras_run(f"models:/{name}/{version.version}")
    return BatchModel(name, str(version.version), spec, float(threshold), calibrated, run)


def _keras_run(uri: str) -> Runtime:
    model = load_keras(uri)
    return lambda batch: (model.predict(batch, verbose=0), np.zeros((len(batch), 0), np.float32), None)


def predict_files(paths: list[Path], model: BatchModel, progress: Any = print) -> pd.DataFrame:
    """One row per file (:data:`COLUMNS`): the service's answer, or the reason it would refuse it."""
    rows = []
    for position, path in enumerate(paths, 1):
        row: dict[str, Any] = {"file": str(path), "model_version": model.version}
        try:
            original = decode(path.read_bytes())
            check_proportions(original.size)
            prepared = prepare(original, model.spec.image_size, model.spec.square)
        except (ImageError, OSError) as error:
            rows.append({**row, "error": str(error)})
            continue
        probabilities, _, _ = model.run(model_input(prepared[np.newaxis]))
        probability = float(np.asarray(probabilities).reshape(-1)[0])
        calibration = model.spec.calibration
        calibrated = None if calibration is None else float(platt(probability, *calibration))
        rows.append({
            **row,
            "label": "PNEUMONIA" if probability >= model.threshold else "NORMAL",
            "probability": round(probability, 6),
            "calibrated_probability": None if calibrated is None else round(calibrated, 6),
            "threshold": round(model.threshold, 6),
            "site": model.site,
        })  # fmt: skip
        if position % 100 == 0:
            progress(f"{position}/{len(paths)} files predicted")
    return pd.DataFrame(rows, columns=COLUMNS)
