"""The service's registry client told apart "no such model" from "not an MLflow server"."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from pneumo import registry


@pytest.fixture
def web_server(tmp_path):
    """A plain web server (Python's file server): what a wrong ``MLFLOW_TRACKING_URI`` may reach."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_is_not_mlflow_is_an_error_not_a_missing_model(web_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", web_server)
    with pytest.raises(registry.RegistryError, match="is MLFLOW_TRACKING_URI the MLflow tracking server"):
        registry.alias_version("pneumonia-classifier", "champion")
    with pytest.raises(registry.RegistryError, match="MLFLOW_TRACKING_URI"):
        registry.artifact("0123456789abcdef", "model.onnx")
