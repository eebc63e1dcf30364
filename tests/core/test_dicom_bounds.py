"""DICOM read within bounds: a deflated data set is inflated only as far as its header and first
frame, and a malformed header value is a 4xx whose message and traceback name no value."""

from __future__ import annotations

import traceback
import tracemalloc

import numpy as np
import pytest
from dicomfiles import MALFORMED_VALUE, deflate_bomb, dicom_bytes, malformed_dicoms
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pneumo.dicom import read_dicom
from pneumo.image_errors import CorruptImage


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return deflate_bomb()


def test_a_deflate_bomb_is_refused_without_inflating_it(bomb: bytes):
    assert len(bomb) < 1_000_000  # about 780 KB that inflate to 768 MB
    tracemalloc.start()
    try:
        with pytest.raises(CorruptImage, match="805306368 bytes, not the 8192"):
            read_dicom(bomb, 50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak / 2**20:.0f} MB allocated to refuse it"


def test_a_deflated_film_reads_as_its_uncompressed_twin():
    stored = np.random.default_rng(0).integers(0, 4095, (300, 200)).astype(np.uint16)
    plain = dicom_bytes(stored, bits=12, window=(2000.0, 3000.0))
    deflated = dicom_bytes(stored, bits=12, window=(2000.0, 3000.0), syntax=DeflatedExplicitVRLittleEndian)
    assert len(deflated) < len(plain)
    assert np.array_equal(np.asarray(read_dicom(deflated)), np.asarray(read_dicom(plain)))
    frames = dicom_bytes(np.stack([stored, stored[::-1]]), bits=12, window=(2000.0, 3000.0),
                         syntax=DeflatedExplicitVRLittleEndian)  # fmt: skip
    assert np.array_equal(np.asarray(read_dicom(frames)), np.asarray(read_dicom(plain)))  # the first frame


def test_a_truncated_deflated_film_is_damaged_not_an_error():
    stored = np.zeros((64, 64), np.uint16)
    deflated = dicom_bytes(stored, syntax=DeflatedExplicitVRLittleEndian)
    with pytest.raises(CorruptImage):
        read_dicom(deflated[: len(deflated) // 2])


@pytest.mark.parametrize("name", list(malformed_dicoms()))
def test_malformed_header_values_are_refused_naming_no_value(name: str):
    data = malformed_dicoms()[name]
    with pytest.raises(CorruptImage) as caught:
        read_dicom(data, 50_000_000)
    told = "".join(traceback.format_exception(caught.value))  # what a logged traceback would say
    assert MALFORMED_VALUE not in told and "DOE" not in told, told
