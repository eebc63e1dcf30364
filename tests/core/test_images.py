"""pneumo.images: decoding and the one preparation path of training and serving."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pneumo.images import ImageError, decode, deidentified_png, prepare


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
