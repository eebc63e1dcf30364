"""DICOM through the running service, as a clinic's PACS export arrives: the same answer as the PNG
it was made from, and its patient fields nowhere the service writes (state folder, logs, S3)."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import SERVING_MODEL, running_service
from dicomfiles import (
    MALFORMED_VALUE,
    PATIENT_ID,
    PATIENT_NAME,
    deflate_bomb,
    dicom_bytes,
    dicom_from_gray,
    malformed_dicoms,
)
from PIL import Image
from pydicom.uid import BasicTextSRStorage, JPEGLSLossless

from pneumo.config import Settings, state_dir
from pneumo.storage import s3_client

pytestmark = pytest.mark.integration
TRACES = [PATIENT_NAME, "Moreau", PATIENT_ID, "19610203", "Saint-Exemple", MALFORMED_VALUE]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _written_since(stack: Settings, since: datetime) -> dict[str, bytes]:
    """Every S3 object of the test stack written since ``since``, by URI."""
    client, found = s3_client(stack), {}
    for bucket in (b["Name"] for b in client.list_buckets()["Buckets"]):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                if item["LastModified"] >= since:
                    body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    found[f"s3://{bucket}/{item['Key']}"] = body
    return found


def test_a_dicom_gets_the_pngs_answer_and_leaves_no_patient_data(served_model, stack: Settings, xray,
                                                                   tmp_path: Path):  # fmt: skip
    since = datetime.now(UTC).replace(microsecond=0)
    gray = xray.convert("L")
    dicom = dicom_from_gray(gray, bits=12, photometric="MONOCHROME1")  # inverted, 12-bit, with a name
    assert PATIENT_NAME.encode() in dicom
    log = tmp_path / "service.log"
    env = {
        "PNEUMO_MODEL_NAME": SERVING_MODEL,
        "PNEUMO_RECORDS_URL": f"sqlite:///{state_dir() / 'dicom-predictions.db'}",
        "PNEUMO_STORE_IMAGES_URI": f"s3://{stack.raw_bucket}/dicom-test-images",
        "PNEUMO_FEEDBACK_URI": f"s3://{stack.raw_bucket}/dicom-test-feedback",
        "PNEUMO_LOG_LEVEL": "debug",
    }
    with running_service(env, "/ready", log=log) as url:
        png_answer = requests.post(f"{url}/predict", files={"file": ("x.png", _png(gray))}, timeout=30).json()
        named = {"file": (f"{PATIENT_NAME}.dcm", dicom, "application/dicom")}  # a name in the file name
        as_file = requests.post(f"{url}/predict?explain=1", files=named, timeout=60)
        as_body = requests.post(f"{url}/predict", data=dicom, timeout=30,
                                headers={"Content-Type": "application/dicom"})  # fmt: skip
        for response in (as_file, as_body):
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["label"] == png_answer["label"]
            assert abs(answer["probability"] - png_answer["probability"]) <= 0.05
        assert as_file.json()["gradcam_png"]
        label = {"request_id": as_file.json()["request_id"], "label": "PNEUMONIA"}
        confirmed = requests.post(f"{url}/feedback", json=label, timeout=30)
        assert confirmed.status_code == 201 and confirmed.json()["training_copy"], confirmed.text
        hostile = {**malformed_dicoms(), "deflate bomb": deflate_bomb()}
        for name, data in hostile.items():  # 4xx, and no header value in the answer or the log
            refused = requests.post(f"{url}/predict", data=data, timeout=30,
                                    headers={"Content-Type": "application/dicom"})  # fmt: skip
            assert refused.status_code == 422, (name, refused.text)
            assert MALFORMED_VALUE not in refused.text
        time.sleep(0.5)

    written = _written_since(stack, since)
    stored = [uri for uri in written if "/dicom-test-" in uri]
    assert len(stored) == 4, stored  # three images as received (two DICOM de-identified) and one copy
    for uri, body in written.items():
        for trace in TRACES:
            assert trace.encode() not in body, f"{trace} in {uri}"
    for path in [p for p in state_dir().rglob("*") if p.is_file()] + [log]:
        content = path.read_bytes()
        for trace in TRACES:
            assert trace.encode() not in content, f"{trace} in {path}"
    assert "POST /predict" in log.read_text()  # the log was written, and searched


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (lambda: dicom_bytes(np.zeros((64, 64), np.uint16), syntax=JPEGLSLossless), 415, "JPEG-LS Lossless"),
        (lambda: dicom_bytes(np.zeros((1, 1), np.uint16), sop_class=BasicTextSRStorage, with_pixels=False),
         415, "Basic Text SR Storage"),
        (lambda: dicom_bytes(np.zeros((64, 64), np.uint16))[:-300], 422, "damaged"),
        (lambda: dicom_bytes(np.zeros((8, 8), np.uint16)), 422, "too small"),
        (lambda: _png(Image.new("L", (1, 1))), 422, "too small"),
        (lambda: _png(Image.new("L", (1, 4000))), 422, "too small"),
        (lambda: _png(Image.new("L", (100, 4000))), 422, "too elongated"),
    ],
    ids=["compressed syntax", "not an image", "truncated", "tiny dicom", "1x1", "1x4000", "strip"],
)  # fmt: skip
def test_unusable_inputs_are_refused_saying_what_was_sent(client, data, status: int, words: str):
    response = client.post("/predict", data={"file": (io.BytesIO(data()), "upload")})
    assert response.status_code == status, response.get_json()
    assert words in response.get_json()["error"]
    assert "Moreau" not in response.get_data(as_text=True)


def test_a_multi_frame_dicom_is_answered_from_its_first_frame(client, xray):
    gray = xray.convert("L")
    single = client.post("/predict", data=dicom_from_gray(gray), content_type="application/dicom")
    frames = client.post("/predict", data=dicom_from_gray(gray, frames=3), content_type="application/dicom")
    assert single.status_code == frames.status_code == 200
    assert single.get_json()["probability"] == frames.get_json()["probability"]


def _png16(pixels: np.ndarray, bits: int) -> bytes:
    """A 16-bit grayscale PNG declaring ``bits`` significant bits (sBIT)."""
    import zlib

    data = _png(Image.fromarray(pixels.astype(np.uint16)))
    chunk = b"sBIT" + bytes([bits])
    return data[:33] + (1).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big") + data[33:]


def assert_same_answer(answer: dict, expected: dict, tolerance: float) -> None:
    """The same probability within ``tolerance``, and so the same label, unless the probability
    lies within ``tolerance`` of the threshold, where so small a difference may cross it."""
    assert abs(answer["probability"] - expected["probability"]) <= tolerance
    if abs(expected["probability"] - expected["threshold"]) > tolerance:
        assert answer["label"] == expected["label"]


def test_a_hot_pixel_in_a_12_bit_image_changes_nothing(client, xray):
    twelve = np.rint(np.asarray(xray.convert("L"), np.float64) / 255 * 4095).astype(np.uint16)
    hot = twelve.copy()
    hot[3, 3] = 65535  # one saturated detector pixel, beyond the 12 bits declared
    answers = []
    for data, kind in [(_png16(twelve, 12), "image/png"), (_png16(hot, 12), "image/png"),
                       (dicom_bytes(hot, 12, "MONOCHROME2"), "application/dicom")]:  # fmt: skip
        response = client.post("/predict", data=data, content_type=kind)
        assert response.status_code == 200, response.get_json()
        answers.append(response.get_json())
    plain = client.post("/predict", data=_png(xray.convert("L")), content_type="image/png").get_json()
    clean, *hot_ones = answers
    for answer in hot_ones:  # the hot pixel changes nothing the 12-bit film did not already say
        assert_same_answer(answer, clean, 0.005)
    assert_same_answer(clean, plain, 0.02)  # the 12 bits read as the 8-bit copy, rounding apart
