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
    """An input that is not a usable image; the message says why."""


class UnsupportedImage(ImageError):
    """Empty, not an image, or an image format that is not accepted."""


class ImageTooLarge(ImageError):
    """More pixels than allowed (decompression bombs included)."""


class CorruptImage(ImageError):
    """A recognised image format whose data is truncated or damaged."""


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


def decode(data: bytes, formats: tuple[str, ...] | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode and fully load image bytes.

    Args:
        data: the file's bytes.
        formats: PIL format names to accept (e.g. ``("JPEG", "PNG")``); None accepts any.
        max_pixels: refuse larger images before decoding them (decompression bombs).

    Raises:
        UnsupportedImage: empty, not an image, or a format outside ``formats``.
        ImageTooLarge: more pixels than ``max_pixels``.
        CorruptImage: recognised but truncated or damaged.
    """
    if not data:
        raise UnsupportedImage("the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnsupportedImage("not a readable image: send a JPEG or PNG file") from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    if formats is not None and image.format not in formats:
        raise UnsupportedImage(f"{image.format} images are not supported: send {' or '.join(formats)}")
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} pixels is more than the {max_pixels} allowed")
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptImage(f"the {image.format} file is truncated or damaged ({error})") from error
    return image


BIT_DEPTH = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def image_stats(size: tuple[int, int], mode: str, prepared: np.ndarray) -> dict[str, float | int | str]:
    """Statistics of one image, for monitoring: the same code for training data and production.

    Size (width, height), mode and bit depth come from the original; intensities from the prepared
    array (what the model sees), so they are cheap to compute and comparable across resolutions.
    """
    width, height = size
    pixels = prepared.astype(np.float32)
    histogram = np.bincount(prepared.ravel(), minlength=256) / prepared.size
    nonzero = histogram[histogram > 0]
    p1, p5, p25, p50, p75, p95, p99 = np.percentile(pixels, [1, 5, 25, 50, 75, 95, 99])
    return {
        "width": width,
        "height": height,
        "aspect": round(width / height, 4),
        "mode": mode,
        "bit_depth": BIT_DEPTH.get(mode, 8),
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
        "p1": float(p1),
        "p5": float(p5),
        "p25": float(p25),
        "p50": float(p50),
        "p75": float(p75),
        "p95": float(p95),
        "p99": float(p99),
        "entropy": float(-(nonzero * np.log2(nonzero)).sum()),
    }


def load_prepared(path: str, size: int, square_mode: str = "crop") -> np.ndarray:
    """Read an image file and prepare it (see :func:`prepare`)."""
    with open(path, "rb") as handle:
        return prepare(decode(handle.read()), size, square_mode)


def model_input(prepared: np.ndarray) -> np.ndarray:
    """Stack prepared ``(N, size, size)`` uint8 images into the model's float32 input."""
    return np.asarray(prepared, np.float32)[..., np.newaxis]


def deidentified_png(data: bytes) -> bytes:
    """The image's pixels alone, as PNG: no EXIF, no text chunks, no file name, nothing but pixels.

    A confirmed image becomes training data this way (``POST /feedback``); palette images become
    RGB, every other mode (8 or 16 bit, gray or colour) keeps its pixel values.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LA"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        clean = Image.frombytes(image.mode, image.size, image.tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, "PNG")
    return buffer.getvalue()
