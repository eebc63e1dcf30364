"""What the service refuses before any view runs: cross-origin browser POSTs, stalled bodies,
requests without the token a protected endpoint needs; and errors that never name internal endpoints."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest
import requests
from conftest import SERVING_MODEL, running_service
from PIL import Image

from pneumo.serving import create_app

pytestmark = pytest.mark.integration


def _png(xray: Image.Image) -> bytes:
    buffer = io.BytesIO()
    xray.save(buffer, "PNG")
    return buffer.getvalue()


def _app(tmp_path: Path, **config):
    return create_app({"MODEL_NAME": SERVING_MODEL, "RELOAD_INTERVAL_S": 0,
                       "RECORDS_URL": f"sqlite:///{tmp_path / 'p.db'}", **config})  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # not a browser: curl, a PACS bridge
        ({"Origin": "http://localhost"}, 200),  # the service's own page
        ({"Origin": "https://ward.example.org"}, 200),  # listed in PNEUMO_ALLOWED_ORIGINS
        ({"Origin": "https://evil.example.com"}, 403),
        ({"Origin": "null"}, 403),  # a sandboxed frame or a file:// page
        ({"Sec-Fetch-Site": "cross-site"}, 403),
    ],
)
def test_browser_posts_from_other_origins_are_refused(served_model, tmp_path, xray, headers, status):
    client = _app(tmp_path, ALLOWED_ORIGINS={"https://ward.example.org"}).test_client()
    response = client.post("/predict", data={"file": (io.BytesIO(_png(xray)), "x.png")}, headers=headers)
    assert response.status_code == status, response.get_json()
    if status == 403:
        assert "PNEUMO_ALLOWED_ORIGINS" in response.get_json()["error"]
        label = client.post("/feedback", json={"request_id": "x", "label": "NORMAL"}, headers=headers)
        assert label.status_code == 403  # nor can it label
    assert client.get("/ready", headers=headers).status_code == 200  # reading is not refused


def test_reports_and_metrics_follow_their_tokens(served_model, tmp_path):
    client = _app(tmp_path, API_TOKEN="api-secret", METRICS_TOKEN="metrics-secret").test_client()
    for path in ("/reports", "/reports/2026/01/01/monitoring-000000.html"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer api-secret"}).status_code != 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer api-secret"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).status_code == 200
    assert _app(tmp_path).test_client().get("/metrics").status_code == 200  # no token: open as before


def test_errors_never_name_internal_endpoints(served_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_S3_ENDPOINT", "http://127.0.0.1:9")  # S3 down
    app = _app(tmp_path)
    client = app.test_client()
    response = client.get("/reports")
    assert response.status_code == 503
    text = response.get_data(as_text=True)
    assert "127.0.0.1" not in text and ":9" not in text and "<internal>" in text

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # the registry down
    assert app.extensions["pneumo.model"].refresh() is False
    ready = client.get("/ready").get_data(as_text=True)
    assert "127.0.0.1" not in ready and "<internal>" in ready
    assert "127.0.0.1" in app.extensions["pneumo.model"].last_error  # the log keeps the whole message


def _stall(url: str) -> socket.socket:
    """A connection that announces a 100 kB body and sends 10 bytes of it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\x89PNG\r\n\x1a\n\0\0")  # fmt: skip
    return sock


def test_slow_senders_cannot_starve_the_workers(served_model):
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_BODY_TIMEOUT": "2"}
    with running_service(env, "/ready") as url:  # 1 worker x 2 threads
        stalled = [_stall(url) for _ in range(8)]
        try:
            started = time.monotonic()
            assert requests.get(f"{url}/health", timeout=30).status_code == 200
            waited = time.monotonic() - started
            for sock in stalled:
                sock.settimeout(30)
                assert sock.recv(200).startswith(b"HTTP/1.1 408"), "a stalled body is answered 408"
        finally:
            for sock in stalled:
                sock.close()
        assert waited < 15, f"/health waited {waited:.1f} s behind 8 stalled uploads"
        assert requests.get(f"{url}/ready", timeout=10).json()["ready"]
