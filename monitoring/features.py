"""The features of one image, computed by the same code for the training reference and production.

Image statistics (``pneumo.images.image_stats``), the model's probability, and a compact embedding:
the penultimate layer (:data:`pneumo.contract.EMBEDDING_LAYER`) projected on a PCA fitted to the
training images of that model version. The PCA travels with the model version as an artifact
(:data:`pneumo.contract.PCA_ARTIFACT`), so serving projects the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.contract import EMBEDDING_LAYER

IMAGE_COLUMNS = (
    "width", "height", "aspect", "bit_depth",
    "mean", "std", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "entropy",
)  # fmt: skip
PREDICTION_COLUMN = "probability"
EMBEDDING_DIMS = 4
EMBEDDING_COLUMNS = tuple(f"emb_{i}" for i in range(EMBEDDING_DIMS))
FEATURE_COLUMNS = (*IMAGE_COLUMNS, PREDICTION_COLUMN, *EMBEDDING_COLUMNS)


@dataclass(frozen=True)
class Projection:
    """A PCA projection of penultimate-layer activations to ``EMBEDDING_DIMS`` numbers."""

    mean: np.ndarray
    components: np.ndarray  # (dims, features)

    @classmethod
    def fit(cls, activations: np.ndarray, dims: int = EMBEDDING_DIMS) -> Projection:
        """Fit on ``(n, features)`` activations (SVD of the centred matrix)."""
        mean = activations.mean(axis=0)
        _, _, vt = np.linalg.svd(activations - mean, full_matrices=False)
        components = np.zeros((dims, activations.shape[1]), np.float64)
        components[: min(dims, len(vt))] = vt[:dims]
        return cls(mean=mean, components=components)

    def project(self, activations: np.ndarray) -> np.ndarray:
        """``(n, features)`` -> ``(n, dims)``."""
        return (np.atleast_2d(activations) - self.mean) @ self.components.T

    def to_dict(self) -> dict[str, list]:
        return {"mean": self.mean.tolist(), "components": self.components.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> Projection:
        return cls(mean=np.asarray(data["mean"]), components=np.asarray(data["components"]))


def embedding_columns(embedding: np.ndarray) -> dict[str, float]:
    """One projected embedding as ``{"emb_0": ..., ...}``."""
    return {name: float(value) for name, value in zip(EMBEDDING_COLUMNS, embedding, strict=True)}


def with_embedding(model):
    """A Keras model giving ``[probability, penultimate activations]`` for the same input."""
    import keras

    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(EMBEDDING_LAYER).output])
