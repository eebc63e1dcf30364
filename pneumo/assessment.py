"""A model measured on any labelled folder (``pneumo evaluate``): the metrics a clinic checks.

The folder is read in either layout (NIH CSV or NORMAL/ and PNEUMONIA/ class folders), every image
goes through the serving preprocessing, and the model's own stored threshold decides. Writes
``metrics.json`` (point values, 95% patient-level bootstrap intervals, confusion matrix),
``predictions.csv`` (one row per image), ``roc.png`` and ``confusion_matrix.png``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from pneumo.calibration import calibrate_threshold
from pneumo.contract import CHAMPION, SQUARE_DEFAULT, SiteThreshold, VersionSpec
from pneumo.datasets import DataError, read_labelled
from pneumo.figures import confusion_figure, roc_figure
from pneumo.metrics import REPORTED, binary_metrics, bootstrap_intervals
from pneumo.models import NOT_FOUND_CODES, load_keras, registered_version
from pneumo.network import predict
from pneumo.prepared import prepared_images


@dataclass
class ModelSpec:
    """A model to evaluate: where it is and how it decides."""

    uri: str
    threshold: float | None
    square: str
    version: str | None = None
    name: str | None = None  # the registered model, for versions of the registry
    sites: dict[str, SiteThreshold] = field(default_factory=dict)
    site: str | None = None  # the site whose threshold ``threshold`` is (:meth:`for_site`)
    threshold_source: str = "version"  # version | run | site | given (--threshold)

    def for_site(self, site: str) -> ModelSpec:
        """This model deciding at ``site``'s threshold (``pneumo calibrate``).

        Raises:
            LookupError: the version has no threshold for that site.
        """
        if site not in self.sites:
            calibrated = ", ".join(sorted(self.sites)) or "none"
            raise LookupError(
                f"{self.uri} (version {self.version or '-'}) has no threshold for site {site!r} "
                f"(calibrated sites: {calibrated}): run `pneumo calibrate --site {site} --data DIR` first"
            )
        return replace(self, threshold=self.sites[site].threshold, site=site, threshold_source="site")


def resolve_model(uri: str | None, model_name: str) -> ModelSpec:
    """The model behind ``uri`` (default ``models:/<model_name>@champion``) and its stored threshold.

    ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` read the version's tags; ``runs:/ID/...``
    reads the run's ``threshold`` metric; any other MLflow model URI has no stored threshold.

    Raises:
        LookupError: the alias, version or run does not exist.
    """
    uri = uri or f"models:/{model_name}@{CHAMPION}"
    client = mlflow.MlflowClient()
    try:
        if uri.startswith("models:/"):
            version = registered_version(uri)
            spec = VersionSpec.of(version)
            return ModelSpec(uri, spec.threshold, spec.square, str(version.version), version.name, spec.sites)
        if uri.startswith("runs:/"):
            run = client.get_run(uri.removeprefix("runs:/").split("/", 1)[0])
            threshold = run.data.metrics.get("threshold")
            square = run.data.params.get("data.square", SQUARE_DEFAULT)
            return ModelSpec(uri, threshold, square, threshold_source="run")
    except mlflow.exceptions.MlflowException as error:
        if error.error_code not in NOT_FOUND_CODES:
            raise
        raise LookupError(f"model {uri} not found in {mlflow.get_tracking_uri()}: {error.message}") from error
    return ModelSpec(uri, None, SQUARE_DEFAULT)


def prepare_table(table: pd.DataFrame, size: int, square: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Prepare a labelled table's images as the service prepares them.

    Args:
        table: rows from :func:`pneumo.datasets.read_labelled`.
        size: the model's input side.
        square: how the model's version makes images square.

    Returns:
        The readable rows (the number of unreadable ones in ``table.attrs["unreadable"]``) and
        their prepared images.

    Raises:
        DataError: fewer than one readable image of each class.
    """
    images, unreadable = prepared_images(table["path"], size, square)
    table = table.drop(index=table.index[unreadable]).reset_index(drop=True)
    if table["label"].nunique() < 2:
        raise DataError(f"after skipping {len(unreadable)} unreadable images one class has none left")
    table.attrs["unreadable"] = len(unreadable)
    return table, images


def score_folder(folder: Path, spec: ModelSpec, data: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """The model's probability of pneumonia for every readable image of a labelled folder.

    Args:
        folder: a labelled folder in either layout.
        spec: the model and its square mode (:func:`resolve_model`).
        data: the ``data`` section of params.yaml (the label names).

    Returns:
        The readable rows (``path``, ``patient_id``, ``label``; the number skipped in
        ``attrs["unreadable"]``) and their probabilities.

    Raises:
        DataError: the folder holds no usable labelled images of both classes.
        LookupError: the model cannot be loaded.
    """
    table = read_labelled(folder, data["positive_label"], data["negative_label"])
    try:
        model = load_keras(spec.uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise LookupError(f"cannot load the model {spec.uri}: {error}") from error
    size = int(model.inputs[0].shape[1])
    table, images = prepare_table(table, size, spec.square)
    print(f"scoring {len(table)} images ({int(table['label'].sum())} pneumonia) at {size} px")
    return table, predict(model, images)


def assess(
    folder: Path,
    spec: ModelSpec,
    data: dict[str, Any],
    out: Path,
    resamples: int = 1000,
) -> dict[str, Any]:
    """Score ``spec``'s model on ``folder`` and write the report files into ``out``.

    Args:
        folder: a labelled folder in either layout.
        spec: the model, its threshold and square mode (:func:`resolve_model`).
        data: the ``data`` section of params.yaml (the label names).
        out: where ``metrics.json``, ``predictions.csv``, ``roc.png`` and ``confusion_matrix.png`` go.
        resamples: bootstrap resamples of patients for the 95% intervals.

    Returns:
        The content of ``metrics.json``.

    Raises:
        ValueError: the model has no stored threshold and none was given.
        DataError: the folder holds no usable labelled images of both classes.
        LookupError: the model cannot be loaded.
    """
    if spec.threshold is None:
        raise ValueError(f"{spec.uri} has no stored threshold: pass one with --threshold")
    table, p = score_folder(folder, spec, data)
    y = table["label"].to_numpy(np.int64)
    metrics = binary_metrics(y, p, spec.threshold)
    intervals = bootstrap_intervals(y, p, spec.threshold, table["patient_id"].to_numpy(), resamples)
    report = {
        "model_uri": spec.uri,
        "model_version": spec.version,
        "threshold": spec.threshold,
        "site": spec.site,
        "threshold_source": spec.threshold_source,
        "data": str(folder),
        "images": len(table),
        "positives": int(y.sum()),
        "patients": int(table["patient_id"].nunique()),
        "unreadable": table.attrs["unreadable"],
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bootstrap": {"resamples": resamples, "unit": "patient", "interval": 0.95},
        **{name: metrics[name] for name in REPORTED},
        "intervals": {name: [None if math.isnan(v) else v for v in intervals[name]] for name in REPORTED},
        "confusion_matrix": {
            "tn": metrics["tn"],
            "fp": metrics["fp"],
            "fn": metrics["fn"],
            "tp": metrics["tp"],
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    predictions = table[["path", "patient_id", "label"]].assign(
        probability=p, predicted=(p >= spec.threshold).astype(int)
    )
    predictions["correct"] = predictions["predicted"] == predictions["label"]
    predictions.to_csv(out / "predictions.csv", index=False)
    for name, figure in {
        "roc.png": roc_figure(y, p, metrics, f"ROC: {folder.name}"),
        "confusion_matrix.png": confusion_figure(metrics, f"Confusion matrix: {folder.name}"),
    }.items():
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
    return report


def calibrate_site(
    folder: Path,
    spec: ModelSpec,
    data: dict[str, Any],
    site: str,
    target: float,
    confidence: float | None = None,
    resamples: int = 1000,
) -> SiteThreshold:
    """Choose ``site``'s threshold for ``spec``'s model on a labelled sample of the site's images.

    Args:
        folder: the sample, in either labelled layout.
        spec: the model (:func:`resolve_model`).
        data: the ``data`` section of params.yaml (the label names).
        site: the site's name.
        target: the sensitivity the threshold must reach.
        confidence: if given, the lower confidence bound of sensitivity must reach the target
            (:func:`pneumo.calibration.calibrate_threshold`).
        resamples: bootstrap resamples of patients for the 95% intervals.

    Raises:
        SampleTooSmall: too few pneumonia cases for ``confidence`` (says how many are needed).
        DataError: the folder holds no usable labelled images of both classes.
        LookupError: the model cannot be loaded.
    """
    table, p = score_folder(folder, spec, data)
    y, patients = table["label"].to_numpy(np.int64), table["patient_id"].to_numpy()
    threshold, bound = calibrate_threshold(y, p, target, confidence, patients)
    metrics = binary_metrics(y, p, threshold)
    intervals = bootstrap_intervals(y, p, threshold, patients, resamples)
    return SiteThreshold(
        site=site,
        threshold=threshold,
        target_sensitivity=target,
        sensitivity=metrics["sensitivity"],
        specificity=metrics["specificity"],
        images=len(table),
        positives=int(y.sum()),
        data=str(folder),
        calibrated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        confidence=confidence,
        sensitivity_bound=bound,
        intervals={m: [round(v, 4) for v in intervals[m]] for m in ("sensitivity", "specificity")},
    )
