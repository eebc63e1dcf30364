"""Operations endpoints: liveness, readiness, Prometheus metrics, admin reload."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from pneumo.serving import metrics
from pneumo.serving.auth import require_token

bp = Blueprint("ops", __name__)


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
        "runtime": model.runtime if model else None,
        "loaded_at": model.loaded_at if model else None,
        "registry_reachable": holder.registry_reachable,
        "last_registry_check": holder.last_check,
        "last_error": holder.last_error,
        "auth_required": current_app.config["API_TOKEN"] is not None,
    }
    return jsonify(body), 200 if model else 503


@bp.get("/metrics")
def prometheus():
    """Prometheus text exposition."""
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
        error=holder.last_error,
    )
