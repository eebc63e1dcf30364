"""``POST /feedback``: a clinician's confirmed diagnosis for a past prediction.

The label is stored beside the prediction's record, never over an earlier one: the newest label
counts, and every label stays in the history. Monitoring measures live performance on them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from pneumo.monitoring.records import LABELS, add_feedback, feedback_history, prediction
from pneumo.serving.auth import require_token
from pneumo.serving.records import RecordsDatabase

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
        if predicted is None:  # a prediction made a moment ago may still be in the recorder's queue
            current_app.extensions["pneumo.recorder"].flush(timeout_s=5.0)
            predicted = prediction(store.engine, request_id)
        if predicted is None:
            abort(404, f"no prediction has request_id {request_id!r}")
        earlier = feedback_history(store.engine, request_id)
        row = add_feedback(store.engine, request_id, label)
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
    }
    return jsonify(answer), 201
