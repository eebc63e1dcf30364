"""DICOM X-rays to 8-bit grayscale, as a radiologist's default view shows them.

The chain is the standard's: stored values -> modality LUT (rescale slope and intercept) -> VOI LUT
(the first window of Window Center/Width, or a VOI LUT Sequence; without either, the range the
declared Bits Stored can hold) -> MONOCHROME1 inverted, so that bone is white as in every other input.
It is computed once per file as a lookup table over the possible stored values and then indexed by
the pixels: the full-size arrays stay uint16 and uint8, never float64.

Only pixels leave this module: no patient, study or device field of the file is returned, logged or
put into an error message (messages name the transfer syntax or object class, never a value).
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from pneumo.image_errors import CorruptImage, ImageTooLarge, UnsupportedImage

MAGIC_OFFSET, MAGIC = 128, b"DICM"  # a Part 10 file: 128-byte preamble, then "DICM"
HINT = "export the image uncompressed (Explicit VR Little Endian), or as PNG"


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part 10 file."""
    return data[MAGIC_OFFSET : MAGIC_OFFSET + len(MAGIC)] == MAGIC


def read_dicom(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """The first frame of a DICOM image as an 8-bit grayscale ``L`` image (``info["format"]`` is
    ``"DICOM"``).

    Raises:
        UnsupportedImage: not an image object, or pixel data this installation cannot decode; the
            message names the object class or transfer syntax that was sent.
        ImageTooLarge: more pixels than ``max_pixels`` (checked before decoding).
        CorruptImage: a DICOM file whose header or pixel data is damaged.
    """
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=False)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise CorruptImage("the DICOM file's header is truncated or damaged") from error
    if "PixelData" not in dataset:
        kind = getattr(dataset.get("SOPClassUID"), "name", None) or "object without a class"
        raise UnsupportedImage(f"the DICOM file is a {kind} and holds no image: send an X-ray image object")
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    if max_pixels is not None and rows * columns > max_pixels:
        raise ImageTooLarge(f"{columns}x{rows} pixels is more than the {max_pixels} allowed")
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    try:
        pixels = pixel_array(dataset, index=0 if int(dataset.get("NumberOfFrames") or 1) > 1 else None)
    except (NotImplementedError, RuntimeError) as error:
        if syntax is not None and syntax.is_compressed:
            raise UnsupportedImage(
                f"DICOM transfer syntax {syntax.name} ({syntax}) cannot be decoded here: {HINT}"
            ) from error
        raise CorruptImage("the DICOM pixel data is truncated or damaged") from error
    except (ValueError, AttributeError, KeyError, TypeError, EOFError) as error:
        raise CorruptImage("the DICOM pixel data is truncated or damaged") from error
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour (RGB, or YBR converted to RGB)
        return _tagged(Image.fromarray(pixels[..., :3].astype(np.uint8, copy=False), "RGB").convert("L"))
    if pixels.ndim != 2:
        raise UnsupportedImage(f"a DICOM image of shape {pixels.shape} is not a single grayscale frame")
    return _tagged(Image.fromarray(_display_table(dataset)[_index(pixels, dataset)], "L"))


def _tagged(image: Image.Image) -> Image.Image:
    image.info["format"] = "DICOM"
    return image


def _index(pixels: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Stored values as indices into :func:`_display_table` (signed ones shifted by 2**15)."""
    if int(dataset.get("PixelRepresentation") or 0) == 1:
        return (pixels.astype(np.int32) + 32768).clip(0, 65535).astype(np.uint16)
    return pixels.astype(np.uint16, copy=False)


def _display_table(dataset: Dataset) -> np.ndarray:
    """The 65,536-entry uint8 table from stored value (as :func:`_index` shifts it) to display."""
    signed = int(dataset.get("PixelRepresentation") or 0) == 1
    bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 16)
    stored = np.arange(65536, dtype=np.int64) - (32768 if signed else 0)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    stored = stored.clip(low, high)  # values beyond the declared depth are clipped, not rescaled
    values = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        center, width = _first(dataset.WindowCenter), max(_first(dataset.WindowWidth), 1.0)
        shown = ((values - (center - 0.5)) / max(width - 1, 1.0) + 0.5).clip(0, 1)  # linear (C.11.2.1.2)
    elif "VOILUTSequence" in dataset:
        descriptor = dataset.VOILUTSequence[0].LUTDescriptor
        shown = np.asarray(apply_voi_lut(values, dataset, prefer_lut=True), np.float64) / (
            2 ** int(descriptor[2]) - 1
        )
    else:  # the whole range the declared depth can hold, after rescaling
        bottom, top = float(values.min()), float(values.max())
        shown = (values - bottom) / (top - bottom) if top > bottom else np.zeros_like(values)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        shown = 1.0 - shown  # MONOCHROME1: the smallest value is white
    return np.rint(shown.clip(0, 1) * 255).astype(np.uint8)


def _first(value) -> float:
    """The first of a multi-valued DICOM number (a file may carry several windows)."""
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)
