"""A registered model on full-resolution films of its own test-split patients: the processing shift.

A data set re-exported at 224 px (squashed, JPEG) trains the model; the clinic sends the original
films. This script finds, in a second labelled folder of full-resolution films (``--films``), the
images of patients the model's training run put in its **test** split (the flow's split is a pure
function of the training table: :func:`pneumo.processed.split_patients`), scores them through the
service's own preprocessing and the version's stored threshold, and prints AUC, sensitivity and
specificity with 95% patient-bootstrap intervals, as received and under each degraded copy
(:mod:`pneumo.degrade`, stand-ins for other sites' pipelines). Films of training or validation
patients are counted and left out. Numbers only, no assertions.

    python benchmarks/full_resolution.py --training-data ../shared/data/cxr-train224 \\
        --films ../shared/data/cxr-dev [--model models:/pneumonia-classifier@champion]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (pneumo.network)

import mlflow
import numpy as np
import typer

from pneumo.assessment import resolve_model
from pneumo.config import apply_client_env, load_params
from pneumo.datasets import read_labelled
from pneumo.degrade import CONDITIONS
from pneumo.images import decode, prepare, to_grayscale8
from pneumo.metrics import binary_metrics, bootstrap_intervals
from pneumo.models import load_keras
from pneumo.network import predict
from pneumo.processed import split_patients


def main(
    training_data: Annotated[Path, typer.Option(help="the labelled folder the model was trained on")],
    films: Annotated[Path, typer.Option(help="full-resolution films, some of the same patients")],
    model: Annotated[str, typer.Option(help="MLflow model URI")] = "models:/pneumonia-classifier@champion",
) -> None:
    """Print the model's metrics on the films of its test-split patients."""
    apply_client_env()
    spec = resolve_model(model, "pneumonia-classifier")
    run = mlflow.MlflowClient().get_run(
        mlflow.MlflowClient().get_model_version(spec.name, spec.version).run_id
    )
    data = load_params(run.data.tags.get("profile", "default"))["data"]
    fractions = {key: float(run.data.params[f"data.{key}"]) for key in ("val_fraction", "test_fraction")}
    seed = int(run.data.params["data.seed"])
    table = read_labelled(training_data, data["positive_label"], data["negative_label"])
    assigned = split_patients(table, fractions["val_fraction"], fractions["test_fraction"], seed)
    split = dict(zip(table["patient_id"], assigned, strict=True))
    rows = read_labelled(films, data["positive_label"], data["negative_label"])
    rows["split"] = rows["patient_id"].map(split).fillna("unseen")
    print("films by the split of their patient:", rows["split"].value_counts().to_dict())
    rows = rows[rows["split"] == "test"].reset_index(drop=True)
    keras_model = load_keras(spec.uri)
    size = int(keras_model.inputs[0].shape[1])
    originals = [to_grayscale8(decode(Path(path).read_bytes())) for path in rows["path"]]
    y, patients = rows["label"].to_numpy(), rows["patient_id"].to_numpy()
    print(
        f"\nversion {spec.version} ({run.data.tags.get('profile')}), {size} px, square {spec.square}, "
        f"threshold {spec.threshold:.4f}: {len(rows)} films of test patients ({int(y.sum())} pneumonia)\n"
    )
    print("| films | AUC (95% CI) | sensitivity (95% CI) | specificity (95% CI) |")
    print("|---|---|---|---|")
    for name, condition in CONDITIONS.items():
        images = np.stack([prepare(condition(image), size, spec.square) for image in originals])
        p = predict(keras_model, images)
        point = binary_metrics(y, p, spec.threshold)
        ci = bootstrap_intervals(y, p, spec.threshold, patients)
        cells = [
            f"{point[m]:.3f} ({ci[m][0]:.3f}-{ci[m][1]:.3f})" for m in ("auc", "sensitivity", "specificity")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    typer.run(main)
