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


def overlay_png(prepared: np.ndarray, cam: np.ndarray) -> str:
    """The prepared X-ray with the map blended over it (dark red to yellow where the model looked
    most, transparent where it did not), as a base64 PNG."""
    heat = upsampled(cam, prepared.shape)
    gray = prepared.astype(np.float32)[..., np.newaxis].repeat(3, axis=-1)
    colour = np.stack([heat, heat**2 * 0.8, (1 - heat) * 0.2], axis=-1) * 255
    alpha = 0.55 * heat[..., np.newaxis]
    blended = (gray * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blended, "RGB").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
