"""Operations endpoints: liveness, readiness, Prometheus metrics, admin reload, operator events."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from flask import Blueprint, Response, abort, current_app, jsonify, request

from pneumo.monitoring.records import add_operator_event
from pneumo.serving import metrics
from pneumo.serving.auth import require_token
from pneumo.serving.security import redact

bp = Blueprint("ops", __name__)


@bp.get("/openapi.json")
def openapi():
    """The API contract (``serving/openapi.yaml``), as JSON."""
    return jsonify(contract())


@cache
def contract() -> dict:
    """The OpenAPI document shipped with the package."""
    return yaml.safe_load(resources.files("pneumo.serving").joinpath("openapi.yaml").read_text())


@bp.get("/health")
def health():
    """Liveness: the process answers."""
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    """Readiness: a model is loaded; which one, since when, and whether the registry answers."""
    holder = current_app.extensions["pneumo.model"]
    model = holder.current
    body = {
        "ready": model is not None,
        "model_name": holder.name,
        "alias": holder.alias,
        "model_version": model.version if model else None,
        "threshold": model.threshold if model else None,
        "calibrated_threshold": model.calibrated(model.threshold) if model else None,
        # what deciding at the threshold means: sensitivity and specificity, and measured on what
        "operating_point": model.operating_point if model else None,
        "site": holder.site,  # PNEUMO_SITE
        # False: PNEUMO_SITE is set but the version has no threshold of its own for it
        "site_threshold": model.site is not None if model and holder.site else None,
        "runtime": model.runtime if model else None,
        "precision": model.precision if model else None,
        "gradcam": model.explained_by if model else None,  # onnx: no TensorFlow in this worker
        "loaded_at": model.loaded_at if model else None,
        "registry_reachable": holder.registry_reachable,
        "last_registry_check": holder.last_check,
        "last_error": redact(holder.last_error),
        # the prediction records: a store that keeps failing loses what monitoring needs
        "records": _records_health(current_app.extensions["pneumo.recorder"].health()),
        "auth_required": current_app.config["API_TOKEN"] is not None,
    }
    return jsonify(body), 200 if model else 503


def _records_health(health: dict) -> dict:
    return {**health, "last_failure": redact(health["last_failure"])}


@bp.get("/metrics")
@require_token("METRICS_TOKEN", fallback="API_TOKEN")
def prometheus():
    """Prometheus text exposition (behind ``PNEUMO_METRICS_TOKEN`` when one is set)."""
    payload, content_type = metrics.exposition()
    return Response(payload, content_type=content_type)


@bp.post("/admin/reload")
@require_token("ADMIN_TOKEN", always=True)
def reload():
    """Check the alias now and swap in its version if it moved."""
    holder = current_app.extensions["pneumo.model"]
    swapped = holder.refresh()
    model = holder.current
    return jsonify(
        swapped=swapped,
        model_version=model.version if model else None,
        registry_reachable=holder.registry_reachable,
        error=redact(holder.last_error),
    )


@bp.post("/admin/events")
@require_token("ADMIN_TOKEN", always=True)
def operator_event():
    """Store an operator event (a Prefect automation's webhook: a failed run, a promotion, ...);
    the newest head the ``/reports`` page."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(
            400,
            'send a JSON object, e.g. {"event": "prefect.flow-run.Failed", "name": "...", "message": "..."}',
        )
    try:
        row = add_operator_event(current_app.extensions["pneumo.records_db"].engine, body)
    except Exception as error:
        current_app.logger.exception("could not store an operator event")
        abort(503, f"the records database cannot be written right now: {type(error).__name__}")
    return jsonify(id=row["id"], event=row["event"], received_at=row["received_at"].isoformat()), 201
