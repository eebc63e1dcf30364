"""The prediction service: a Flask app that serves the promoted model and records what it sees."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from pneumo.config import Settings, admin_token, apply_client_env, load_params, state_dir
from pneumo.contract import CHAMPION, check_site
from pneumo.images import MAX_ASPECT, MIN_SIDE
from pneumo.serving import metrics
from pneumo.serving.api import bp as api_bp
from pneumo.serving.feedback import bp as feedback_bp
from pneumo.serving.model import ModelHolder
from pneumo.serving.ops import bp as ops_bp
from pneumo.serving.records import Recorder, RecordsDatabase
from pneumo.serving.reports import bp as reports_bp
from pneumo.serving.security import (
    allowed_hosts,
    allowed_origins,
    redact,
    refuse_cross_origin,
    refuse_unknown_host,
)


def app_config_from_env() -> dict[str, Any]:
    """The Flask app's configuration from ``PNEUMO_*`` environment variables (see the README)."""
    env = os.environ.get
    return {
        "MODEL_NAME": env("PNEUMO_MODEL_NAME", load_params()["registry"]["model_name"]),
        "MODEL_ALIAS": env("PNEUMO_MODEL_ALIAS", CHAMPION),
        "RELOAD_INTERVAL_S": float(env("PNEUMO_RELOAD_INTERVAL", "30")),
        "MAX_CONTENT_LENGTH": int(float(env("PNEUMO_MAX_UPLOAD_MB", "20")) * 1024 * 1024),
        "MAX_PIXELS": int(env("PNEUMO_MAX_PIXELS", str(50_000_000))),
        "MIN_SIDE": int(env("PNEUMO_MIN_SIDE", str(MIN_SIDE))),  # smaller images: 422
        "MAX_ASPECT": float(env("PNEUMO_MAX_ASPECT", str(MAX_ASPECT))),  # more elongated: 422
        "API_TOKEN": env("PNEUMO_API_TOKEN") or None,  # `pneumo serve` sets one (pneumo.cli.serve)
        "ADMIN_TOKEN": admin_token(),  # PNEUMO_ADMIN_TOKEN, or the one `pneumo deploy` made
        "RECORDS_URL": Settings.from_env().records_url,
        "STORE_IMAGES_URI": env("PNEUMO_STORE_IMAGES_URI") or None,
        "FEEDBACK_URI": Settings.from_env().feedback_uri,
        "SITE": env("PNEUMO_SITE") or None,  # decide at this site's threshold (`pneumo calibrate`)
        "METRICS_TOKEN": env("PNEUMO_METRICS_TOKEN") or None,  # /metrics as a bearer token, when set
        "ALLOWED_ORIGINS": allowed_origins(env("PNEUMO_ALLOWED_ORIGINS")),  # browser POSTs from elsewhere
        "ALLOWED_HOSTS": allowed_hosts(env("PNEUMO_ALLOWED_HOSTS")),  # the names it is reached by
    }


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: load the model behind the alias, start following it, wire the blueprints.

    Args:
        test_config: values that win over the environment (tests).
    """
    # A registry check must fail fast when the registry is down: the model in hand keeps serving.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    apply_client_env()

    app = Flask(__name__)
    app.config.from_mapping(app_config_from_env())
    app.config.update(test_config or {})
    app.json.sort_keys = False

    if app.config["SITE"] is not None:
        check_site(app.config["SITE"])  # PNEUMO_SITE must name a site: fail at start, not per request
    state_dir().mkdir(parents=True, exist_ok=True)
    holder = ModelHolder(
        app.config["MODEL_NAME"],
        app.config["MODEL_ALIAS"],
        on_swap=lambda m: metrics.set_model(m.name, m.version, m.alias),
        site=app.config["SITE"],
    )
    holder.refresh()
    if app.config["RELOAD_INTERVAL_S"] > 0:
        holder.start_polling(app.config["RELOAD_INTERVAL_S"])
    app.extensions["pneumo.model"] = holder
    app.extensions["pneumo.recorder"] = Recorder(app.config["RECORDS_URL"], app.config["STORE_IMAGES_URI"])
    app.extensions["pneumo.records_db"] = RecordsDatabase(app.config["RECORDS_URL"])

    app.register_blueprint(api_bp)
    app.register_blueprint(feedback_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(reports_bp)

    @app.before_request
    def _start_clock() -> None:
        g.started = time.perf_counter()

    app.before_request(refuse_unknown_host)  # before the origin rule, which trusts the Host
    app.before_request(refuse_cross_origin)

    @app.after_request
    def _count(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint=endpoint).observe(
            time.perf_counter() - g.get("started", time.perf_counter())
        )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        response = error.get_response()  # keeps Allow, WWW-Authenticate, ... headers
        response.set_data(json.dumps({"error": redact(error.description), "status": error.code}))
        response.content_type = "application/json"
        return response

    @app.errorhandler(ClientDisconnected)
    def _incomplete_body(error: ClientDisconnected):
        """The body ended early, or stalled longer than ``PNEUMO_BODY_TIMEOUT`` (gunicorn.conf.py)."""
        stalled = isinstance(error.__context__, TimeoutError)
        message = "the request body did not arrive in time" if stalled else "the request body ended early"
        response = jsonify(error=f"{message}; send it again", status=408 if stalled else 400)
        response.headers["Connection"] = "close"  # what is left of the body must not be read as a request
        sock = request.environ.get("gunicorn.socket")
        if sock is not None:  # nothing more is read: gunicorn's closing linger must not wait for the body
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        return response, 408 if stalled else 400

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        app.logger.exception("unhandled error")
        return jsonify(error="internal error; the request was not processed", status=500), 500

    return app
