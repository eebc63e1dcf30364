"""Training-time augmentation for real X-rays: the geometry and acquisition shifts clinics produce.

Training keeps a *context* image per example: the grayscale original with its short side at
``size / zoom`` (so that views are resized from at least the model's input size, as at inference)
and its long side cut to at most ``squeeze`` times that (with ``data.square: crop``; with ``stretch``
or ``pad`` the whole film made square as inference makes it, at that side). Every epoch draws a
new random view of it (:func:`random_view`): a crop that is square or up to ``squeeze`` times
longer along the long side (resized to a square, that is a squashed image, as when a clinic's
system stretches a whole film to 224x224) or up to ``widen`` times shorter (a squashed film
widened back, as its original would look cropped), small zoom, shift and rotation, a flip, gamma,
contrast and brightness changes, a lower resolution and JPEG re-encoding. Inference uses
:func:`pneumo.images.prepare`, the view with none of these.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pneumo.images import square, to_grayscale8


def context_side(size: int, aug: dict[str, Any]) -> int:
    """The short side of the context images for a model input of ``size`` px."""
    return math.ceil(size / aug["zoom"])


def context(image: Image.Image, size: int, squeeze: float, square_mode: str = "crop") -> np.ndarray:
    """The grayscale context of one image.

    Args:
        image: the decoded original.
        size: the context's short side (:func:`context_side`).
        squeeze: the long side is centre-cropped to at most ``squeeze`` times the short side.
        square_mode: ``data.square``; ``stretch`` and ``pad`` make the film square first, as
            :func:`pneumo.images.prepare` does at inference, so the context is ``size`` x ``size``.

    Returns:
        A ``uint8`` array.
    """
    gray = to_grayscale8(ImageOps.exif_transpose(image) or image)
    if square_mode != "crop":
        gray = square(gray, square_mode)
        return np.asarray(gray.resize((size, size), Image.BILINEAR, reducing_gap=3.0), np.uint8)
    width, height = gray.size
    scale = size / min(width, height)
    width, height = max(size, round(width * scale)), max(size, round(height * scale))
    gray = gray.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
    longest = math.floor(size * squeeze)
    if width > longest:
        left = (width - longest) // 2
        gray = gray.crop((left, 0, left + longest, height))
    elif height > longest:
        top = (height - longest) // 2
        gray = gray.crop((0, top, width, top + longest))
    return np.asarray(gray, np.uint8)


def _log_uniform(rng: np.random.Generator, largest: float) -> float:
    """A factor between ``1/largest`` and ``largest``, as likely below 1 as above."""
    return float(math.exp(rng.uniform(-math.log(largest), math.log(largest))))


def _crop_box(
    shape: tuple[int, int], rng: np.random.Generator, aug: dict[str, Any]
) -> tuple[int, int, int, int]:
    """A random crop (left, top, right, bottom): a square of ``zoom``..1 of the short side, made
    longer along the long side by up to ``squeeze`` or shorter by up to ``widen`` (each as likely as
    the other when both are above 1), placed near the centre of the long side."""
    height, width = shape
    short, long = min(height, width), max(height, width)
    side = short * rng.uniform(aug["zoom"], 1.0)
    if aug["widen"] > 1 and (aug["squeeze"] <= 1 or rng.random() < 0.5):
        length = side / rng.uniform(1.0, aug["widen"])
    else:
        length = min(long, side * rng.uniform(1.0, aug["squeeze"]))
    slack_short, slack_long = short - side, long - length
    offset_short = slack_short * rng.uniform(0.0, 1.0)
    offset_long = slack_long * (0.5 + rng.uniform(-aug["shift"], aug["shift"]))
    if width >= height:
        return (
            round(offset_long),
            round(offset_short),
            round(offset_long + length),
            round(offset_short + side),
        )
    return round(offset_short), round(offset_long), round(offset_short + side), round(offset_long + length)


def random_view(ctx: np.ndarray, size: int, rng: np.random.Generator, aug: dict[str, Any]) -> np.ndarray:
    """One random ``(size, size)`` ``uint8`` training view of a context image.

    Args:
        ctx: a context image from :func:`context` (short side :func:`context_side`).
        size: the model's input side.
        rng: the random generator (one per training run, so runs repeat).
        aug: ``data.augment`` of params.yaml: ``squeeze``, ``widen``, ``zoom``, ``shift``, ``rotation_deg``,
            ``horizontal_flip``, ``gamma``, ``contrast``, ``brightness``, ``low_resolution``,
            ``low_resolution_p``, ``jpeg_quality``, ``jpeg_p``.
    """
    image = Image.fromarray(ctx).crop(_crop_box(ctx.shape, rng, aug))
    image = image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    if aug["rotation_deg"]:
        fill = int(np.percentile(ctx, 5))
        angle = rng.uniform(-aug["rotation_deg"], aug["rotation_deg"])
        image = image.rotate(angle, resample=Image.BILINEAR, fillcolor=fill)
    if aug["horizontal_flip"] and rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < aug["low_resolution_p"]:
        low = max(8, round(size * rng.uniform(aug["low_resolution"], 1.0)))
        image = image.resize((low, low), Image.BILINEAR, reducing_gap=3.0).resize(
            (size, size), Image.BILINEAR
        )
    pixels = np.asarray(image, np.float32) / 255.0
    pixels = pixels ** _log_uniform(rng, aug["gamma"])
    pixels = pixels.mean() + (pixels - pixels.mean()) * _log_uniform(rng, aug["contrast"])
    pixels = pixels * (1.0 + rng.uniform(-aug["brightness"], aug["brightness"]))
    out = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < aug["jpeg_p"]:
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, "JPEG", quality=int(rng.integers(aug["jpeg_quality"], 96)))
        out = np.asarray(Image.open(buffer).convert("L"), np.uint8)
    return out
