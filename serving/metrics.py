"""Prometheus metrics of the service (multi-process aware under gunicorn)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("pneumo_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"])
LATENCY = Histogram(
    "pneumo_request_latency_seconds",
    "Request latency by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PREDICTIONS = Counter("pneumo_predictions_total", "Predictions by label", ["label"])
RECORDS_DROPPED = Counter("pneumo_records_dropped_total", "Predictions that could not be recorded")
MODEL_INFO = Gauge(
    "pneumo_model_info",
    "The model version being served (value 1)",
    ["name", "version", "alias"],
    multiprocess_mode="liveall",
)


_served: dict[str, str] = {}


def set_model(name: str, version: str, alias: str) -> None:
    """Point the info metric at the model now in hand (the one it replaced drops to 0)."""
    if _served:
        MODEL_INFO.labels(**_served).set(0)
    _served.update(name=name, version=version, alias=alias)
    MODEL_INFO.labels(**_served).set(1)


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type, merged across gunicorn workers when there are several."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
