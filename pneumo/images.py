"""Image decoding and preparation: the one path shared by training, evaluation and serving.

The model takes square grayscale pixels in 0..255 (float32, shape ``(size, size, 1)``) and scales
them to [0, 1] in its first layer, so callers never normalise by hand.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from pneumo.dicom import is_dicom, read_dicom
from pneumo.image_errors import (  # noqa: F401  (re-exported: callers catch them from here)
    CorruptImage,
    DegenerateImage,
    ImageError,
    ImageTooLarge,
    UnsupportedImage,
)

SQUARE_MODES = ("crop", "pad", "stretch")
MIN_SIDE = 32  # pixels: a smaller side cannot be a chest X-ray
MAX_ASPECT = 3.0  # long side over short side: beyond it, a strip, not a chest X-ray


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
BITS_STORED = "bits_stored"  # image.info key: the significant bits a 16-bit image declares


def to_grayscale8(image: Image.Image) -> Image.Image:
    """Any PIL mode (1, L, LA, P, RGB, RGBA, I;16, I, F) to 8-bit grayscale ``L``.

    16-bit images are scaled by the bit depth they declare (``image.info["bits_stored"]``: a PNG's
    sBIT chunk, see :func:`decode`), never by their own extremes: one hot pixel cannot darken the
    rest of the image, and a 12-bit image looks as a radiologist's default view shows it. One that
    declares none gets the smallest standard depth (8, 10, 12, 14 or 16 bits) that holds 99.9% of
    its pixels. Values above the range are clipped. The mapping is a lookup table on the uint16
    pixels: about 3 bytes per pixel, never float64 copies.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.asarray(image)
        if pixels.dtype != np.uint16:  # mode I: 32-bit integers
            pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
        top = 2 ** int(image.info.get(BITS_STORED) or _likely_bits(pixels)) - 1
        table = np.rint(np.minimum(np.arange(65536, dtype=np.float32), top) * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(table[pixels], mode="L")
    if image.mode == "F":  # floating point: no declared range, so its own
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def _likely_bits(pixels: np.ndarray) -> int:
    """The smallest standard depth holding 99.9% of the pixels (a histogram: no sort, no copy)."""
    counts = np.cumsum(np.bincount(pixels.ravel(), minlength=65536))
    value = int(np.searchsorted(counts, 0.999 * counts[-1]))
    return next(bits for bits in (8, 10, 12, 14, 16) if value <= 2**bits - 1)


def png_significant_bits(data: bytes) -> int | None:
    """The gray significant bits of a PNG's sBIT chunk (before IDAT), or None without one."""
    position = 8  # after the signature
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT" and length >= 1:
            bits = data[position + 8]
            return bits if 1 <= bits <= 16 else None
        position += 12 + length
    return None


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
    """Decode and fully load image bytes: JPEG, PNG and the rest PIL reads, and DICOM (rendered to
    8-bit grayscale by :func:`pneumo.dicom.read_dicom`; ``image.info["format"]`` says ``"DICOM"``).

    Args:
        data: the file's bytes.
        formats: format names to accept (e.g. ``("JPEG", "PNG", "DICOM")``); None accepts any.
        max_pixels: refuse larger images before decoding them (decompression bombs).

    Raises:
        UnsupportedImage: empty, not an image, or a format outside ``formats``.
        ImageTooLarge: more pixels than ``max_pixels``.
        CorruptImage: recognised but truncated or damaged.
    """
    if not data:
        raise UnsupportedImage("the file is empty")
    accepted = " or ".join(formats) if formats else "an image"
    if is_dicom(data):
        if formats is not None and "DICOM" not in formats:
            raise UnsupportedImage(f"DICOM files are not supported here: send {accepted}")
        return read_dicom(data, max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnsupportedImage(f"not a readable image: send {accepted}") from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    if formats is not None and image.format not in formats:
        raise UnsupportedImage(f"{image.format} images are not supported: send {accepted}")
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} pixels is more than the {max_pixels} allowed")
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(str(error)) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptImage(f"the {image.format} file is truncated or damaged ({error})") from error
    if image.format == "PNG" and image.mode in SIXTEEN_BIT_MODES:
        bits = png_significant_bits(data)
        if bits is not None:
            image.info[BITS_STORED] = bits
    return image


def check_proportions(
    size: tuple[int, int], min_side: int = MIN_SIDE, max_aspect: float = MAX_ASPECT
) -> None:
    """Refuse an image too small or too elongated to be a chest X-ray (a 1x1 or 1x4000 image would
    otherwise be stretched into the model and answered with a label).

    Raises:
        DegenerateImage: a side below ``min_side`` pixels, or long/short side above ``max_aspect``.
    """
    width, height = size
    if min(width, height) < min_side:
        raise DegenerateImage(f"{width}x{height} pixels is too small: each side needs {min_side} or more")
    if max(width, height) / min(width, height) > max_aspect:
        raise DegenerateImage(
            f"{width}x{height} pixels is too elongated for a chest X-ray: the long side may be at most "
            f"{max_aspect:g} times the short one"
        )


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
    RGB, every other mode (8 or 16 bit, gray or colour) keeps its pixel values. A DICOM file becomes
    its rendered 8-bit view (:func:`pneumo.dicom.read_dicom`): what the model saw, without one field
    of its header.
    """
    if is_dicom(data):
        buffer = io.BytesIO()
        read_dicom(data).save(buffer, "PNG")
        return buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LA"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        clean = Image.frombytes(image.mode, image.size, image.tobytes())
        bits = (
            png_significant_bits(data) if image.format == "PNG" and image.mode in SIXTEEN_BIT_MODES else None
        )
    info = PngImagePlugin.PngInfo()
    if bits is not None:  # the declared depth travels with the copy: it scales the same in training
        info.add(b"sBIT", bytes([bits]))
    buffer = io.BytesIO()
    clean.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()
