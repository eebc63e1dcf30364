"""DICOM test files, made with pydicom from pixels (never downloaded): what a clinic's PACS exports."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Moreau^Hortense^Q7X"  # a name that can be searched for and would never occur by chance
PATIENT_ID = "PID-5829-QX"


def dicom_from_gray(
    gray: Image.Image | np.ndarray,
    bits: int = 12,
    photometric: str = "MONOCHROME1",
    window: tuple[float, float] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    frames: int = 1,
) -> bytes:
    """An 8-bit grayscale image as a DICOM X-ray whose default view shows exactly that image: stored
    at ``bits`` bits, inverted for MONOCHROME1, with the patient fields a real export carries."""
    values = np.asarray(gray.convert("L") if isinstance(gray, Image.Image) else gray, np.float64) / 255
    if photometric == "MONOCHROME1":
        values = 1.0 - values
    stored = np.rint(values * (2**bits - 1)).astype(np.uint16)
    return dicom_bytes(np.stack([stored] * frames) if frames > 1 else stored, bits, photometric,
                       window=window, slope=slope, intercept=intercept)  # fmt: skip


def dicom_bytes(
    stored: np.ndarray,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    syntax=ExplicitVRLittleEndian,
    sop_class=DigitalXRayImageStorageForPresentation,
    with_pixels: bool = True,
) -> bytes:
    """A DICOM Part 10 file of uint16 ``stored`` values ``(rows, cols)`` or ``(frames, rows, cols)``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19610203"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.InstitutionName, ds.Modality = "Hopital Saint-Exemple", "DX"
    if with_pixels:
        ds.Rows, ds.Columns = stored.shape[-2:]
        if stored.ndim == 3:
            ds.NumberOfFrames = stored.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if syntax.is_compressed:  # frames that claim the syntax: enough to be refused for it
            ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(64)])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = stored.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


MALFORMED_VALUE = "DOE^Kowalczyk^Z3"  # a header value that must never reach a message or a log
_PLACEHOLDER = "1234567890123.45"  # a valid 16-character DS, swapped for MALFORMED_VALUE in the bytes


def malformed_dicoms() -> dict[str, bytes]:
    """DICOM files whose display values are empty, or a name where a number belongs (as a broken
    PACS export writes them: the name in a DS element's bytes), each a 4xx for the service."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    good = dicom_bytes(np.full((64, 64), 900, np.uint16), window=(1000.0, 2000.0))

    def altered(change) -> bytes:
        ds = dcmread(io.BytesIO(good))
        change(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue().replace(_PLACEHOLDER.encode(), MALFORMED_VALUE.encode())

    def empty_voi_lut(ds):
        del ds.WindowCenter, ds.WindowWidth
        ds.VOILUTSequence = Sequence([Dataset()])

    return {
        "empty window center": altered(lambda ds: setattr(ds, "WindowCenter", "")),
        "named window center": altered(lambda ds: setattr(ds, "WindowCenter", _PLACEHOLDER)),
        "empty rescale slope": altered(lambda ds: setattr(ds, "RescaleSlope", "")),
        "named rescale slope": altered(lambda ds: setattr(ds, "RescaleSlope", _PLACEHOLDER)),
        "named rows": altered(lambda ds: ds.add_new(ds["Rows"].tag, "LO", _PLACEHOLDER)),
        "empty VOI LUT sequence": altered(empty_voi_lut),
    }


def deflate_bomb(inflated: int = 768 << 20) -> bytes:
    """A Deflated Explicit VR Little Endian file: a 64x64 header whose pixel data inflates to
    ``inflated`` bytes of zeros (768 MB by default, from about 780 KB), as a hostile client sends."""
    import zlib

    from pydicom import dcmread
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    plain = dicom_bytes(np.zeros((64, 64), np.uint16))
    meta = dcmread(io.BytesIO(plain)).file_meta
    body_start = 132 + 12 + int(meta.FileMetaInformationGroupLength)  # preamble, DICM, group length
    pixels_at = plain.index(b"\xe0\x7f\x10\x00OW")  # the pixel data element
    body = plain[body_start:pixels_at] + b"\xe0\x7f\x10\x00OW\x00\x00" + inflated.to_bytes(4, "little")
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(16 << 20)
    parts = [squeezer.compress(body), *(squeezer.compress(zeros) for _ in range(inflated // len(zeros)))]
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta)
    return out.getvalue() + b"".join(parts) + squeezer.flush()
