"""The clinician-facing endpoints: the web page and ``POST /predict``."""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, abort, current_app, jsonify, render_template, request

from pneumo.images import (
    CorruptImage,
    DegenerateImage,
    ImageTooLarge,
    UnsupportedImage,
    check_proportions,
    decode,
    prepare,
)
from pneumo.serving import metrics
from pneumo.serving.auth import require_token
from pneumo.serving.heatmap import layers_png, overlay_png
from pneumo.serving.records import Observation, now

bp = Blueprint("api", __name__)
ACCEPTED_FORMATS = ("JPEG", "PNG", "MPO", "DICOM")  # MPO: the JPEG variant many cameras write
IMAGE_TYPES = ("image/jpeg", "image/png", "application/dicom")
HOW_TO_SEND = (
    "send multipart/form-data with a 'file' field, or an image/jpeg, image/png or application/dicom body"
)


@bp.get("/")
def page():
    """The upload page."""
    return render_template("index.html")


def _upload() -> bytes:
    """The image bytes of the request: multipart field ``file`` or a raw image body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            abort(400, "the multipart field 'file' is missing")
        return upload.read()
    if request.mimetype in IMAGE_TYPES:
        return request.get_data()
    if not request.mimetype:
        abort(400, f"no image: {HOW_TO_SEND}")
    abort(415, f"content type {request.mimetype} is not supported: {HOW_TO_SEND}")


@bp.post("/predict")
@require_token("API_TOKEN")
def predict():
    """Classify one chest X-ray (JPEG, PNG or DICOM; 8 to 16 bit; grayscale, RGB or RGBA)."""
    started = time.perf_counter()
    holder = current_app.extensions["pneumo.model"]
    model = holder.current
    if model is None:
        abort(503, "no model is loaded yet: see /ready")
    data = _upload()
    if not data:
        abort(400, "the file is empty")
    try:
        original = decode(data, ACCEPTED_FORMATS, current_app.config["MAX_PIXELS"])
    except ImageTooLarge as error:
        abort(413, str(error))
    except UnsupportedImage as error:
        abort(415, str(error))
    except CorruptImage as error:
        abort(422, str(error))
    try:
        check_proportions(original.size, current_app.config["MIN_SIDE"], current_app.config["MAX_ASPECT"])
    except DegenerateImage as error:
        abort(422, str(error))
    prepared = prepare(original, model.image_size, model.square)
    probability, embedding, computed_cam = model.predict(prepared)
    label = "PNEUMONIA" if probability >= model.threshold else "NORMAL"
    calibrated = model.calibrated(probability)  # what the score means as a probability (Platt)
    body = {
        "label": label,
        "probability": round(probability, 6),  # the model's score: compared with the threshold
        "calibrated_probability": None if calibrated is None else round(calibrated, 6),
        "threshold": round(model.threshold, 6),
        "calibrated_threshold": None if calibrated is None else round(model.calibrated(model.threshold), 6),
        "site": model.site,  # whose threshold decided (pneumo calibrate); null: the version's own
        "model_name": model.name,
        "model_version": model.version,
        "request_id": str(uuid.uuid4()),
    }
    if request.args.get("explain") in ("1", "true", "yes"):
        try:
            cam = model.cam(prepared, computed_cam)
            body["gradcam_png"] = None if cam is None else overlay_png(prepared, cam)
            if cam is not None and request.args.get("layers") in ("1", "true", "yes"):  # the page's
                body["input_png"], body["heatmap_png"] = layers_png(prepared, cam)
        except Exception as error:  # e.g. the registry is down when an old version's Keras model is needed
            current_app.logger.warning("Grad-CAM unavailable: %s", error)
            body["gradcam_png"], body["gradcam_error"] = None, "explanation unavailable right now"
    body["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)

    recorder = current_app.extensions["pneumo.recorder"]
    recorder.submit(
        Observation(
            request_id=body["request_id"],
            created_at=now(),
            model_name=model.name,
            model_version=model.version,
            probability=probability,
            threshold=model.threshold,
            site=holder.site,  # where it was predicted (PNEUMO_SITE), whichever threshold decided
            label=label,
            latency_ms=body["latency_ms"],
            size=original.size,
            mode=original.mode,
            prepared=prepared,
            embedding=embedding,
            raw=data if recorder.image_uri_prefix else None,
        )
    )
    metrics.PREDICTIONS.labels(label=label).inc()
    return jsonify(body)
