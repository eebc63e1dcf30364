"""Image decoding and preparation: the one path shared by training, evaluation and serving.

The model takes square grayscale pixels in 0..255 (float32, shape ``(size, size, 1)``) and scales
them to [0, 1] in its first layer, so callers never normalise by hand.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SQUARE_MODES = ("crop", "pad", "stretch")


class ImageError(ValueError):
    """An input that is not a readable image."""


def to_grayscale8(image: Image.Image) -> Image.Image:
    """Any PIL mode (1, L, LA, P, RGB, RGBA, I;16, I, F) to 8-bit grayscale ``L``.

    16-bit and 32-bit images are scaled by their actual value range, so a 12-bit X-ray stored in
    16 bits keeps its contrast.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def square(image: Image.Image, mode: str = "crop") -> Image.Image:
    """Make an image square: centre ``crop``, ``pad`` with black, or ``stretch`` (no change)."""
    if mode not in SQUARE_MODES:
        raise ValueError(f"square mode must be one of {SQUARE_MODES}, not {mode!r}")
    width, height = image.size
    if mode == "stretch" or width == height:
        return image
    side = min(width, height) if mode == "crop" else max(width, height)
    if mode == "crop":
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))
    return ImageOps.pad(image, (side, side), color=0, centering=(0.5, 0.5))


def prepare(image: Image.Image, size: int, square_mode: str = "crop") -> np.ndarray:
    """Decoded image -> ``uint8`` array of shape ``(size, size)``, ready for the model."""
    gray = square(to_grayscale8(ImageOps.exif_transpose(image) or image), square_mode)
    return np.asarray(gray.resize((size, size), Image.BILINEAR, reducing_gap=3.0), np.uint8)


def decode(data: bytes) -> Image.Image:
    """Decode and fully load image bytes, raising :class:`ImageError` for anything unreadable."""
    if not data:
        raise ImageError("the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"not a readable image ({error})") from error
    return image


def load_prepared(path: str, size: int, square_mode: str = "crop") -> np.ndarray:
    """Read an image file and prepare it (see :func:`prepare`)."""
    with open(path, "rb") as handle:
        return prepare(decode(handle.read()), size, square_mode)


def model_input(prepared: np.ndarray) -> np.ndarray:
    """Stack prepared ``(N, size, size)`` uint8 images into the model's float32 input."""
    return np.asarray(prepared, np.float32)[..., np.newaxis]
