"""Reference: the monitoring features of the training images, stored with the model version."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import task

from pneumo.contract import PCA_ARTIFACT, REFERENCE_ARTIFACT
from pneumo.images import decode, image_stats, model_input, prepare
from pneumo.models import load_keras
from pneumo.monitoring.features import Projection, embedding_columns, with_embedding
from pneumo.processed import split_rows
from pneumo.registry import artifact
from pneumo.runtime import onnx_session_runtime, run_batches
from pneumo.services import SERVICE_TASK, until_reachable


@task(name="build-reference", **SERVICE_TASK)
@until_reachable("building the monitoring reference")
def build_reference(run_id: str, model_uri: str, processed: str, params: dict[str, Any],
                    graph: str | None = None) -> str:  # fmt: skip
    """Compute image statistics, probability and embedding of the (unaugmented) training images.

    Fits the embedding's PCA on them and logs both the table and the PCA to the run. With
    ``graph`` (the run's ONNX artifact the service will run: its int8 graph, say), they come from
    that graph, so that production's embeddings are compared with the same numbers.

    Returns:
        The reference table's ``runs:/`` URI.
    """
    size, square = params["data"]["image_size"], params["data"]["square"]
    if graph is None:
        embed = with_embedding(load_keras(model_uri))

        def features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return embed.predict(model_input(x), batch_size=32, verbose=0)
    else:
        served = onnx_session_runtime(artifact(run_id, graph))

        def features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return run_batches(served, x)

    reference, projection = reference_table(reference_paths(processed, params), size, square, features)
    client = mlflow.MlflowClient()
    client.log_dict(run_id, projection.to_dict(), PCA_ARTIFACT)
    client.log_text(run_id, reference.to_csv(index=False), REFERENCE_ARTIFACT)
    print(f"reference: {len(reference)} training images with features logged to the run")
    return f"runs:/{run_id}/{REFERENCE_ARTIFACT}"


def reference_paths(processed: str, params: dict[str, Any]) -> list[str]:
    """The training images a reference is made of: a fixed sample of at most
    ``monitoring.reference_size`` of the training split (its cost does not grow with the data)."""
    train = split_rows(processed, "train")
    return train.sample(n=min(len(train), params["monitoring"]["reference_size"]), random_state=0)[
        "path"
    ].tolist()


def reference_table(
    paths: Iterable[str],
    size: int,
    square: str,
    features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[pd.DataFrame, Projection]:
    """The monitoring features of image files as the service computes them: image statistics,
    and the probability and penultimate activations ``features`` gives for the prepared images;
    the embedding's PCA is fitted on those activations."""
    rows, prepared = [], []
    for path in paths:
        original = decode(Path(path).read_bytes())
        prepared.append(prepare(original, size, square))
        rows.append(image_stats(original.size, original.mode, prepared[-1]))
    probabilities, activations = features(np.stack(prepared))
    projection = Projection.fit(activations.astype(np.float64))
    embeddings = projection.project(activations)
    table = pd.DataFrame(
        [
            {**stats, "probability": float(p), **embedding_columns(e)}
            for stats, p, e in zip(rows, probabilities.reshape(-1), embeddings, strict=True)
        ]
    )
    return table, projection
