"""pneumo.serving.feedback: clinicians' confirmed diagnoses of past predictions, on the real service."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import SERVING_MODEL
from PIL import Image

from pneumo.config import Settings
from pneumo.monitoring.records import feedback_history, make_engine, read_records
from pneumo.serving import create_app
from pneumo.storage import list_objects, s3_client, split_uri

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _predict(client, image: Image.Image, headers: dict | None = None) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    response = client.post(
        "/predict", data={"file": (io.BytesIO(buffer.getvalue()), "x.png")}, headers=headers
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_confirmed_diagnosis_is_recorded_and_a_correction_keeps_the_history(client, app, xray):
    answer = _predict(client, xray)  # the recorder may not have written it yet: /feedback waits for it
    other = "NORMAL" if answer["label"] == "PNEUMONIA" else "PNEUMONIA"
    first = client.post("/feedback", json={"request_id": answer["request_id"], "label": answer["label"]})
    assert first.status_code == 201, first.get_json()
    assert first.get_json() | {"recorded_at": None} == {
        "request_id": answer["request_id"], "label": answer["label"], "predicted": answer["label"],
        "agrees": True, "replaces": None, "history": [answer["label"]], "recorded_at": None,
        "training_copy": None,
    }  # fmt: skip
    second = client.post("/feedback", json={"request_id": answer["request_id"], "label": other})
    assert second.status_code == 201
    assert (second.get_json()["replaces"], second.get_json()["agrees"]) == (answer["label"], False)
    assert second.get_json()["history"] == [answer["label"], other]

    (row,) = read_records(app.config["RECORDS_URL"])
    assert row["confirmed_label"] == other  # the newest label counts
    history = feedback_history(make_engine(app.config["RECORDS_URL"]), answer["request_id"])
    assert [entry["label"] for entry in history] == [answer["label"], other]  # both kept


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"request_id": "no-such-request", "label": "NORMAL"}, 404, "no prediction has request_id"),
        ({"request_id": "x", "label": "pneumonia"}, 400, "label must be PNEUMONIA or NORMAL"),
        ({"request_id": "x", "label": None}, 400, "label must be PNEUMONIA or NORMAL"),
        ({"label": "NORMAL"}, 400, "request_id is missing"),
        ({"request_id": 7, "label": "NORMAL"}, 400, "request_id is missing or not a string"),
        (["not", "an", "object"], 400, "no JSON object"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(client, body, status: int, message: str):
    response = client.post("/feedback", json=body)
    assert response.status_code == status
    assert message in response.get_json()["error"]


def test_feedback_that_is_not_json_is_refused(client):
    response = client.post("/feedback", data="request_id=x&label=NORMAL")
    assert response.status_code == 400 and "no JSON object" in response.get_json()["error"]


def test_feedback_needs_the_api_token_when_predict_does(
    served_model: dict, tmp_path: Path, xray, records_url: str
):
    app = create_app({"MODEL_NAME": SERVING_MODEL, "RELOAD_INTERVAL_S": 0, "API_TOKEN": "s3cret",
                      "RECORDS_URL": records_url})  # fmt: skip
    client, auth = app.test_client(), {"Authorization": "Bearer s3cret"}
    answer = _predict(client, xray, headers=auth)
    body = {"request_id": answer["request_id"], "label": "NORMAL"}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/feedback", json=body, headers=auth).status_code == 201
    app.extensions["pneumo.model"].stop()


def test_a_confirmed_image_becomes_de_identified_training_data(
    served_model: dict, tmp_path: Path, xray, stack: Settings, records_url: str
):
    """With image storage on, the confirmed image lands, pixels only, in its label's class folder
    under the feedback prefix; a correction moves it."""
    run = uuid.uuid4().hex[:8]
    stored, feedback = f"s3://{stack.raw_bucket}/stored-{run}", f"s3://{stack.raw_bucket}/feedback-{run}"
    app = create_app({"MODEL_NAME": SERVING_MODEL, "RELOAD_INTERVAL_S": 0, "STORE_IMAGES_URI": stored,
                      "FEEDBACK_URI": feedback, "RECORDS_URL": records_url})  # fmt: skip
    client, s3 = app.test_client(), s3_client(stack)
    answer = _predict(client, xray)
    first = client.post("/feedback", json={"request_id": answer["request_id"], "label": "PNEUMONIA"})
    copy = first.get_json()["training_copy"]
    assert copy == f"{feedback}/PNEUMONIA/{answer['request_id']}.png"
    bucket, key = split_uri(copy)
    with Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as image:
        assert image.format == "PNG" and np.array_equal(np.asarray(image), np.asarray(xray))
    moved = client.post("/feedback", json={"request_id": answer["request_id"], "label": "NORMAL"})
    assert moved.get_json()["training_copy"] == f"{feedback}/NORMAL/{answer['request_id']}.png"
    keys = [obj["Key"] for obj in list_objects(s3, feedback)]
    assert keys == [f"feedback-{run}/NORMAL/{answer['request_id']}.png"]  # the PNEUMONIA copy is gone
    app.extensions["pneumo.model"].stop()


def test_without_image_storage_nothing_is_copied(client, xray):
    answer = _predict(client, xray)
    response = client.post("/feedback", json={"request_id": answer["request_id"], "label": "NORMAL"})
    assert response.status_code == 201 and response.get_json()["training_copy"] is None


def test_the_page_offers_confirm_and_correct(client):
    page = client.get("/").get_data(as_text=True)
    assert 'class="confirm"' in page and "secondary correct" in page and 'fetch("feedback"' in page
