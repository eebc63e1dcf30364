"""Degraded copies of an image: stand-ins for another hospital's scanners and processing pipelines.

The conditions expect 8-bit images (``L`` or ``RGB``): :func:`degraded_metrics` converts first.

One definition for ``benchmarks/quality.py`` (robustness of a recipe under cross-validation) and the
evaluate task (every version's model card shows its test split under each of them, at its stored
threshold). Each condition takes a decoded original (:func:`pneumo.images.decode`) and returns the
image a clinic with that pipeline would send; the service then prepares it as it prepares any
upload. The conditions are the shifts measured to move the operating point: a whole film squashed
to 224x224 and saved as JPEG quality 75 (a common PACS export), gamma and contrast, lower resolution.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from pneumo.images import decode, prepare, square, to_grayscale8
from pneumo.metrics import binary_metrics


def gamma(image: Image.Image, value: float) -> Image.Image:
    """Every pixel ``v`` becomes ``255 * (v / 255) ** value``: >1 darker mid-tones, <1 brighter."""
    return image.point(lambda v: round(255 * (v / 255) ** value))


def contrast(image: Image.Image, factor: float) -> Image.Image:
    """Contrast around the mean grey: <1 flatter, >1 harsher."""
    return ImageEnhance.Contrast(image).enhance(factor)


def squashed_jpeg(image: Image.Image, side: int = 224, quality: int = 75) -> Image.Image:
    """The whole film stretched to ``side`` x ``side`` and re-encoded as an RGB JPEG."""
    buffer = io.BytesIO()
    image.resize((side, side), Image.BILINEAR).convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def low_resolution(image: Image.Image, short_side: int = 112) -> Image.Image:
    """Down-sampled so the short side is ``short_side`` pixels."""
    scale = short_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)


CONDITIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "original": lambda image: image,
    "square_cropped": lambda image: square(image, "crop"),
    "squashed_jpeg75": squashed_jpeg,
    "gamma_0.67": lambda image: gamma(image, 0.67),
    "gamma_1.5": lambda image: gamma(image, 1.5),
    "contrast_0.7": lambda image: contrast(image, 0.7),
    "contrast_1.3": lambda image: contrast(image, 1.3),
    "low_res_112px": low_resolution,
}
DEGRADED = tuple(name for name in CONDITIONS if name != "original")


def degraded_copies(paths: list[str], size: int, square_mode: str) -> dict[str, np.ndarray]:
    """The prepared uint8 images ``(N, size, size)`` of every :data:`DEGRADED` copy of ``paths``,
    prepared as the service prepares an upload."""
    originals = [to_grayscale8(decode(Path(path).read_bytes())) for path in paths]  # 16-bit: 8-bit gray
    return {name: np.stack([prepare(CONDITIONS[name](image), size, square_mode) for image in originals])
            for name in DEGRADED}  # fmt: skip


def degraded_metrics(
    paths: list[str],
    y: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
    threshold: float,
    size: int,
    square_mode: str,
) -> dict[str, dict[str, float]]:
    """AUC, sensitivity and specificity at ``threshold`` on degraded copies of labelled images.

    Args:
        paths: the original image files.
        y: their labels.
        score: prepared uint8 images ``(N, size, size)`` -> probabilities.
        threshold: the decision threshold (the version's stored one).
        size: the model's input side.
        square_mode: how the version makes images square.

    Returns:
        ``{condition: {"auc", "sensitivity", "specificity"}}`` for every :data:`DEGRADED` condition.
    """
    copies = degraded_copies(paths, size, square_mode)
    return {name: copy_metrics(y, score(prepared), threshold) for name, prepared in copies.items()}


def copy_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The AUC, sensitivity and specificity reported for a degraded copy."""
    metrics = binary_metrics(y, p, threshold)
    return {m: metrics[m] for m in ("auc", "sensitivity", "specificity")}
