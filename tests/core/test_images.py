"""pneumo.images: decoding and the one preparation path of training and serving."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from dicomfiles import PATIENT_NAME, dicom_bytes, dicom_from_gray
from PIL import Image, PngImagePlugin
from pydicom.uid import BasicTextSRStorage, JPEGLSLossless

from pneumo.images import (
    CorruptImage,
    DegenerateImage,
    ImageError,
    UnsupportedImage,
    check_proportions,
    decode,
    deidentified_png,
    prepare,
)
from pneumo.synth import _anatomy, render_xray


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (300, 200), 128),
        Image.new("RGB", (200, 300), (10, 200, 30)),
        Image.new("RGBA", (120, 120), (255, 255, 255, 0)),
        Image.fromarray(np.linspace(0, 4095, 64 * 48).reshape(48, 64).astype(np.uint16)),
    ],
    ids=["L", "RGB", "RGBA", "16-bit"],
)
def test_prepare_gives_square_uint8_for_every_mode(image: Image.Image):
    out = prepare(image, 32, "crop")
    assert out.shape == (32, 32) and out.dtype == np.uint8


def _png16(pixels: np.ndarray, bits: int | None = None) -> bytes:
    """A 16-bit grayscale PNG, with an sBIT chunk declaring ``bits`` significant bits."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint16)).save(buffer, "PNG")
    data = buffer.getvalue()
    if bits is None:
        return data
    chunk = b"sBIT" + bytes([bits])
    return data[:33] + (1).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big") + data[33:]


TWELVE_BIT = (np.random.default_rng(0).random((256, 256)) * 4095).astype(np.uint16)


@pytest.mark.parametrize("declared", [12, None], ids=["sBIT 12", "undeclared"])
def test_16_bit_is_scaled_by_its_bit_depth_so_a_hot_pixel_changes_nothing(declared: int | None):
    hot = TWELVE_BIT.copy()
    hot[10, 10] = 65535  # one saturated detector pixel
    plain, spoiled = (prepare(decode(_png16(p, declared)), 224) for p in (TWELVE_BIT, hot))
    assert abs(plain.mean() - 127.5) < 2  # a 12-bit image fills the 8-bit range, as a viewer shows it
    assert abs(float(plain.mean()) - float(spoiled.mean())) / 255 < 0.002
    assert np.mean(plain != spoiled) < 0.001  # only the pixels around the hot one differ


def test_16_bit_is_never_stretched_by_its_own_extremes():
    narrow = np.linspace(1000, 3000, 64 * 64).reshape(64, 64)  # a 12-bit image of middling greys
    out = prepare(decode(_png16(narrow, 12)), 64, "crop")
    assert out.min() >= 60 and out.max() <= 190  # 1000/4095*255 = 62, 3000/4095*255 = 187
    full = prepare(decode(_png16(TWELVE_BIT.astype(np.uint32) * 16, 16)), 64)  # the same image, 16 bits
    assert np.abs(full.astype(int) - prepare(decode(_png16(TWELVE_BIT, 12)), 64)).max() <= 1


def test_a_training_copy_keeps_the_declared_bit_depth():
    copy = decode(deidentified_png(_png16(TWELVE_BIT, 12)))
    assert copy.info["bits_stored"] == 12
    assert np.array_equal(prepare(copy, 64), prepare(decode(_png16(TWELVE_BIT, 12)), 64))


def test_square_crop_removes_aspect_ratio():
    wide = Image.new("L", (400, 200), 0)
    wide.paste(255, (100, 0, 300, 200))  # bright centre square, dark sides
    assert prepare(wide, 50, "crop").min() == 255
    assert prepare(wide, 50, "pad").min() == 0


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_decode_rejects_unreadable_bytes(data: bytes):
    with pytest.raises(ImageError):
        decode(data)


def test_decode_rejects_truncated_png():
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 7).save(buffer, "PNG")
    with pytest.raises(ImageError):
        decode(buffer.getvalue()[:-30])


def test_a_training_copy_keeps_the_pixels_and_nothing_else():
    pixels = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(48, 64)
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "Doe^Jane")
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG", pnginfo=info)
    jpeg = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "Jane Doe, born 1950"  # ImageDescription
    Image.fromarray(pixels).convert("RGB").save(jpeg, "JPEG", exif=exif, quality=95)
    for original in (png.getvalue(), jpeg.getvalue()):
        clean = deidentified_png(original)
        assert b"Doe" not in clean and b"Jane" not in clean
        with Image.open(io.BytesIO(clean)) as copy, Image.open(io.BytesIO(original)) as source:
            assert copy.format == "PNG" and not copy.info.get("exif") and "PatientName" not in copy.info
            assert np.array_equal(np.asarray(copy), np.asarray(source))
    sixteen = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint16) * 257).save(sixteen, "PNG")
    with Image.open(io.BytesIO(deidentified_png(sixteen.getvalue()))) as copy:
        assert np.asarray(copy).max() == 250 * 257  # 16-bit values kept


# DICOM: the default view a radiologist's viewer shows, through the same path as every other image.
@pytest.fixture(scope="module")
def xray() -> Image.Image:
    """A chest-X-ray-like 8-bit image with structure (the synthetic generator's)."""
    rng = np.random.default_rng(3)
    return Image.fromarray(render_xray(rng, _anatomy(rng), True, 192))


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("bits", [12, 16])
def test_a_dicom_shows_the_image_it_was_made_from(xray: Image.Image, photometric: str, bits: int):
    data = dicom_from_gray(xray, bits=bits, photometric=photometric)
    image = decode(data, ("PNG", "DICOM"))
    assert image.mode == "L" and image.size == xray.size and image.info["format"] == "DICOM"
    assert np.abs(np.asarray(image, int) - np.asarray(xray, int)).max() <= 1  # MONOCHROME1 inverted back


def test_dicom_rescale_and_window_are_applied():
    stored = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (256, 1))  # a ramp of every 16th value
    # Rescaled to -1024..3071 (CT-like units), then a window of 0 +- 500: values below -500 are black.
    image = decode(dicom_bytes(stored, 12, "MONOCHROME2", window=(0, 1000), intercept=-1024))
    row = np.asarray(image)[0]
    values = stored[0].astype(float) - 1024
    assert (row[values <= -501] == 0).all() and (row[values >= 500] == 255).all()
    middle = np.argmin(np.abs(values))
    assert abs(int(row[middle]) - 128) <= 3


def test_dicom_hot_pixel_beyond_its_bits_changes_nothing(xray: Image.Image):
    clean = dicom_from_gray(xray, bits=12, photometric="MONOCHROME2")
    stored = np.rint(np.asarray(xray, float) / 255 * 4095).astype(np.uint16)
    stored[5, 5] = 65535  # a value the declared 12 bits cannot hold
    spoiled = dicom_bytes(stored, 12, "MONOCHROME2")
    a, b = (prepare(decode(d), 96) for d in (clean, spoiled))
    assert np.mean(a != b) < 0.002


def test_multi_frame_dicom_uses_the_first_frame(xray: Image.Image):
    image = decode(dicom_from_gray(xray, frames=3))
    assert image.size == xray.size and np.abs(np.asarray(image, int) - np.asarray(xray, int)).max() <= 1


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (lambda: dicom_bytes(np.zeros((64, 64), np.uint16), syntax=JPEGLSLossless), UnsupportedImage,
         "JPEG-LS Lossless"),
        (lambda: dicom_bytes(np.zeros((1, 1), np.uint16), sop_class=BasicTextSRStorage, with_pixels=False),
         UnsupportedImage, "Basic Text SR Storage"),
        (lambda: dicom_bytes(np.zeros((64, 64), np.uint16))[:-500], CorruptImage, "damaged"),
        (lambda: dicom_bytes(np.zeros((64, 64), np.uint16)), UnsupportedImage, "DICOM files are not"),
    ],
    ids=["compressed syntax", "no image", "truncated", "not accepted"],
)  # fmt: skip
def test_unusable_dicom_says_what_was_sent(data, error, words: str):
    formats = ("PNG",) if "not" in words else None
    with pytest.raises(error, match=words) as raised:
        decode(data(), formats)
    assert PATIENT_NAME not in str(raised.value) and "Moreau" not in str(raised.value)


def test_a_dicom_training_copy_holds_its_pixels_and_no_patient_field(xray: Image.Image):
    data = dicom_from_gray(xray)
    assert PATIENT_NAME.encode() in data
    png = deidentified_png(data)
    assert PATIENT_NAME.encode() not in png and b"Moreau" not in png
    assert np.array_equal(np.asarray(decode(png)), np.asarray(decode(data)))


@pytest.mark.parametrize(
    ("size", "ok"),
    [((1, 1), False), ((1, 4000), False), ((40, 200), False), ((32, 32), True), ((300, 900), True)],
)
def test_degenerate_sizes_are_refused(size: tuple[int, int], ok: bool):
    if ok:
        check_proportions(size)
    else:
        with pytest.raises(DegenerateImage, match=r"too small|too elongated"):
            check_proportions(size)
