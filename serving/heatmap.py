"""The Grad-CAM heat map drawn over the X-ray, in NumPy and Pillow (no TensorFlow)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def upsampled(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A coarse map in [0, 1] (the feature map's grid), resized bilinearly to ``shape`` (rows, cols)."""
    small = Image.fromarray(np.rint(np.clip(cam, 0, 1) * 255).astype(np.uint8))
    return np.asarray(small.resize(shape[::-1], Image.BILINEAR), np.float32) / 255.0


def _base64_png(pixels: np.ndarray, mode: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG", compress_level=1)  # speed over a few KB
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colours(heat: np.ndarray) -> np.ndarray:
    """Dark red to yellow as the map rises (RGB in 0..255, float32)."""
    return np.stack([heat, heat**2 * 0.8, (1 - heat) * 0.2], axis=-1) * 255


def layers_png(prepared: np.ndarray, cam: np.ndarray) -> tuple[str, str]:
    """The page's two layers, as base64 PNGs of the prepared image's size: the image the model saw
    (grayscale) and the heat map alone (RGBA, transparent where the model did not look), which the
    page stacks with an opacity control."""
    heat = upsampled(cam, prepared.shape)
    rgba = np.concatenate([_colours(heat), heat[..., np.newaxis] * 255], axis=-1)
    return _base64_png(prepared.astype(np.uint8), "L"), _base64_png(np.rint(rgba).astype(np.uint8), "RGBA")


def overlay_png(prepared: np.ndarray, cam: np.ndarray) -> str:
    """The prepared X-ray with the map blended over it (dark red to yellow where the model looked
    most, transparent where it did not), as a base64 PNG."""
    heat = upsampled(cam, prepared.shape)
    gray = prepared.astype(np.float32)[..., np.newaxis].repeat(3, axis=-1)
    alpha = 0.55 * heat[..., np.newaxis]
    blended = (gray * (1 - alpha) + _colours(heat) * alpha).clip(0, 255).astype(np.uint8)
    return _base64_png(blended, "RGB")
