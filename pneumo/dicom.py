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
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from pneumo.image_errors import CorruptImage, ImageTooLarge, UnsupportedImage

MAGIC_OFFSET, MAGIC = 128, b"DICM"  # a Part 10 file: 128-byte preamble, then "DICM"
HINT = "export the image uncompressed (Explicit VR Little Endian), or as PNG"
HEADER_LIMIT = 1 << 20  # bytes of an inflated data set before its pixel data: headers are kilobytes
PIXEL_DATA = 0x7FE00010
DAMAGED = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, IndexError,
           AttributeError, OverflowError, ZeroDivisionError, zlib.error)  # fmt: skip
# Every header value is read inside ``except DAMAGED``, and the errors are raised ``from None``: a
# malformed value (an empty Window Center, a name where a number belongs) is a 422 whose message,
# traceback and log name no value of the file.


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part 10 file."""
    return data[MAGIC_OFFSET : MAGIC_OFFSET + len(MAGIC)] == MAGIC


def read_dicom(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """The first frame of a DICOM image as an 8-bit grayscale ``L`` image (``info["format"]`` is
    ``"DICOM"``). Only the first frame is ever decoded; a deflated data set is inflated only as far
    as its header and first frame (:func:`_inflated`), never to what it might hold.

    Raises:
        UnsupportedImage: not an image object, or pixel data this installation cannot decode; the
            message names the object class or transfer syntax that was sent.
        ImageTooLarge: more pixels than ``max_pixels`` (checked before decoding or inflating).
        CorruptImage: a DICOM file whose header, values or pixel data are damaged or malformed.
    """
    try:
        dataset = _read(data, max_pixels)
    except (ImageTooLarge, UnsupportedImage, CorruptImage):
        raise
    except DAMAGED:
        raise CorruptImage("the DICOM file's header is truncated or damaged") from None
    if "PixelData" not in dataset:
        kind = getattr(dataset.get("SOPClassUID"), "name", None) or "object without a class"
        raise UnsupportedImage(f"the DICOM file is a {kind} and holds no image: send an X-ray image object")
    try:
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    except DAMAGED:
        raise CorruptImage("the DICOM file's image size is malformed") from None
    if max_pixels is not None and rows * columns > max_pixels:
        raise ImageTooLarge(f"{columns}x{rows} pixels is more than the {max_pixels} allowed")
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    try:
        pixels = pixel_array(dataset, index=0)  # the first frame, whatever the rest holds
    except (NotImplementedError, RuntimeError):
        if syntax is not None and syntax.is_compressed:
            raise UnsupportedImage(
                f"DICOM transfer syntax {syntax.name} ({syntax}) cannot be decoded here: {HINT}"
            ) from None
        raise CorruptImage("the DICOM pixel data is truncated or damaged") from None
    except DAMAGED:
        raise CorruptImage("the DICOM pixel data is truncated or damaged") from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour (RGB, or YBR converted to RGB)
        return _tagged(Image.fromarray(pixels[..., :3].astype(np.uint8, copy=False), "RGB").convert("L"))
    if pixels.ndim != 2:
        raise UnsupportedImage(f"a DICOM image of shape {pixels.shape} is not a single grayscale frame")
    try:
        table, index = _display_table(dataset), _index(pixels, dataset)
    except DAMAGED:
        raise CorruptImage(
            "the DICOM file's display values (rescale, window or VOI LUT) are malformed"
        ) from None
    return _tagged(Image.fromarray(table[index], "L"))


def _read(data: bytes, max_pixels: int | None) -> Dataset:
    """The data set of a Part 10 file, a deflated one inflated within bounds first."""
    stream = io.BytesIO(data)
    read_preamble(stream, False)
    meta = _read_file_meta_info(stream)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return pydicom.dcmread(io.BytesIO(data))
    return _inflated(data[stream.tell() :], meta, max_pixels)


def _inflated(deflated: bytes, meta: FileMetaDataset, max_pixels: int | None) -> Dataset:
    """A Deflated Explicit VR Little Endian data set with its first frame only, inflated in two
    bounded steps: the header (at most :data:`HEADER_LIMIT` bytes), then exactly the first frame's
    bytes as the header declares them. A few hundred kilobytes of zeros can inflate to gigabytes
    (a "frame" count that no header declared); here they cost at most a header and one frame.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = inflater.decompress(deflated, HEADER_LIMIT)
    stream = io.BytesIO(head)
    dataset = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: tag == PIXEL_DATA)
    dataset.file_meta = meta
    if stream.tell() == len(head):  # no pixel data within the header's bound
        if len(head) >= HEADER_LIMIT:
            raise ImageTooLarge(f"the deflated DICOM header is larger than {HEADER_LIMIT} bytes")
        if not inflater.eof:  # the deflated stream stops short of its end
            raise CorruptImage("the DICOM file's header is truncated or damaged")
        return dataset  # a data set without an image: refused by the caller for what it is
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    if max_pixels is not None and rows * columns > max_pixels:
        raise ImageTooLarge(f"{columns}x{rows} pixels is more than the {max_pixels} allowed")
    samples, bits = int(dataset.get("SamplesPerPixel") or 1), int(dataset.BitsAllocated)
    if bits not in (8, 16) or samples not in (1, 3):
        raise UnsupportedImage(f"deflated DICOM pixel data of {bits} bits and {samples} samples: {HINT}")
    at, frame = stream.tell(), rows * columns * samples * bits // 8
    if head[at + 4 : at + 6] not in (b"OB", b"OW") or len(head) < at + 12:
        raise CorruptImage("the DICOM pixel data is truncated or damaged")
    header, length = 12, int.from_bytes(head[at + 8 : at + 12], "little")  # tag, VR, 2 reserved, length
    if length == 0xFFFFFFFF:  # encapsulated frames: a compressed syntax's, never a deflated one's
        raise UnsupportedImage(f"deflated DICOM with encapsulated pixel data: {HINT}")
    frames = int(dataset.get("NumberOfFrames") or 1)
    if not frame * frames <= length <= frame * frames + 1:  # + 1: the padding to an even length
        raise CorruptImage(
            f"the deflated DICOM pixel data holds {length} bytes, not the {frame * frames} its"
            f" {frames} frame(s) of {columns}x{rows} declare"
        )
    wanted = at + header + frame
    if wanted > len(head):
        head += inflater.decompress(inflater.unconsumed_tail, wanted - len(head))
    if len(head) < wanted:
        raise CorruptImage("the DICOM pixel data is truncated or damaged")
    dataset.PixelData = head[wanted - frame : wanted]
    dataset["PixelData"].VR = "OB" if bits == 8 else "OW"
    if "NumberOfFrames" in dataset:
        dataset.NumberOfFrames = 1
    dataset.file_meta = FileMetaDataset(meta)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # inflated now
    return dataset


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
