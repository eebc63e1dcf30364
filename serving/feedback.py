"""``POST /feedback``: a clinician's confirmed diagnosis for a past prediction.

The label is stored beside the prediction's record, never over an earlier one: the newest label
counts, and every label stays in the history. Monitoring measures live performance on them.

With image storage on (``PNEUMO_STORE_IMAGES_URI``), the confirmed image is also copied,
de-identified (its pixels alone, as PNG, named by the request id), into the class folder of its
label under ``PNEUMO_FEEDBACK_URI``; a correction moves it. A retraining started by monitoring
reads that prefix beside the champion's data, so the new model sees what production sees.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from pneumo.images import deidentified_png
from pneumo.monitoring.records import LABELS, add_feedback, feedback_history, prediction, set_copied_to
from pneumo.serving.auth import require_token
from pneumo.serving.records import RecordsDatabase
from pneumo.storage import s3_client, split_uri

bp = Blueprint("feedback", __name__)
USAGE = 'send JSON {"request_id": "<the request_id of a /predict answer>", "label": "PNEUMONIA" or "NORMAL"}'


def _body() -> tuple[str, str]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, f"no JSON object: {USAGE}")
    request_id, label = body.get("request_id"), body.get("label")
    if not isinstance(request_id, str) or not request_id.strip():
        abort(400, f"request_id is missing or not a string: {USAGE}")
    if label not in LABELS:
        abort(400, f"label must be PNEUMONIA or NORMAL, not {label!r}")
    return request_id.strip(), label


@bp.post("/feedback")
@require_token("API_TOKEN")
def feedback():
    """Record the confirmed diagnosis of a past prediction: 201, or 404 for an unknown request id."""
    request_id, label = _body()
    store: RecordsDatabase = current_app.extensions["pneumo.records_db"]
    try:
        predicted = prediction(store.engine, request_id)
        recorder = current_app.extensions["pneumo.recorder"]
        if predicted is None:  # a prediction made a moment ago may still be in the recorder's queue
            recorder.flush(timeout_s=5.0)
            predicted = prediction(store.engine, request_id)
        if predicted is None and recorder.holds(request_id):  # spooled in an outage: write it now
            recorder.settle(timeout_s=5.0)
            predicted = prediction(store.engine, request_id)
        if predicted is None and recorder.holds(request_id):
            abort(503, f"the prediction {request_id!r} is recorded and waits for the records database:"
                       " send the label again in a minute")  # fmt: skip
        if predicted is None:
            abort(404, f"no prediction has request_id {request_id!r}")
        if not predicted.get("image_uri") and recorder.image_waits(request_id):  # stored a moment from now
            recorder.settle(timeout_s=5.0)
            predicted = prediction(store.engine, request_id)
        earlier = feedback_history(store.engine, request_id)
        row = add_feedback(store.engine, request_id, label)
        copied = _training_copy(store, predicted, row, earlier)
    except HTTPException:
        raise
    except Exception as error:
        current_app.logger.exception("could not record feedback for %s", request_id)
        abort(503, f"the records database cannot be written right now: {type(error).__name__}")
    answer: dict[str, Any] = {
        "request_id": request_id,
        "label": label,
        "predicted": predicted["label"],
        "agrees": label == predicted["label"],
        "replaces": earlier[-1]["label"] if earlier else None,
        "history": [*(entry["label"] for entry in earlier), label],
        "recorded_at": row["created_at"].isoformat(timespec="seconds"),
        "training_copy": copied,
    }
    return jsonify(answer), 201


def _training_copy(
    store: RecordsDatabase, predicted: dict[str, Any], row: dict[str, Any], earlier: list[dict[str, Any]]
) -> str | None:
    """Copy the stored image, de-identified, to ``<feedback>/<LABEL>/<request id>.png``, after
    removing the copy an earlier label made (a failed copy never leaves the image under its old
    label). None when images are not stored or the copy failed (logged)."""
    feedback_uri = current_app.config.get("FEEDBACK_URI")
    if not predicted.get("image_uri") or not feedback_uri:
        return None
    client, uri = s3_client(), None
    try:
        bucket, prefix = split_uri(feedback_uri)
        key = "/".join(filter(None, [prefix, row["label"], f"{row['request_id']}.png"]))
        for old in {entry["copied_to"] for entry in earlier if entry["copied_to"]} - {f"s3://{bucket}/{key}"}:
            client.delete_object(Bucket=split_uri(old)[0], Key=split_uri(old)[1])  # the earlier label's copy
        source_bucket, source_key = split_uri(predicted["image_uri"])
        png = deidentified_png(client.get_object(Bucket=source_bucket, Key=source_key)["Body"].read())
        client.put_object(Bucket=bucket, Key=key, Body=png, ContentType="image/png")
        uri = f"s3://{bucket}/{key}"
        set_copied_to(store.engine, row["id"], uri)
        return uri
    except Exception:  # the label is recorded; the copy is made again by the next label sent
        current_app.logger.exception("could not copy the confirmed image of %s", row["request_id"])
        return uri
