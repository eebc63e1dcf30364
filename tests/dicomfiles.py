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
