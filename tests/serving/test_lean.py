"""The worker as deployed explains without TensorFlow (the ONNX graph carries Grad-CAM) and reads the
registry without mlflow (pneumo.registry): a fraction of the memory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from conftest import SERVING_MODEL, running_service

pytestmark = pytest.mark.integration


def _workers(port: str) -> list[int]:
    """The gunicorn processes (master and workers) serving ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PNEUMO_PORT={port}".encode() in environ:
                found.append(int(entry.name))
    return found


def test_explained_predictions_never_load_tensorflow(served_model, xray):
    buffer = io.BytesIO()
    xray.save(buffer, "PNG")
    with running_service({"PNEUMO_MODEL_NAME": SERVING_MODEL}, "/ready") as url:
        assert requests.get(f"{url}/ready", timeout=10).json()["gradcam"] == "onnx"
        for _ in range(5):
            answer = requests.post(f"{url}/predict?explain=1", files={"file": ("x.png", buffer.getvalue())},
                                   timeout=30).json()  # fmt: skip
            assert answer["gradcam_png"] and "gradcam_error" not in answer
        maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in _workers(url.rsplit(":", 1)[1])}
        assert len(maps) >= 2  # the master and its worker
        assert any("onnxruntime" in m for m in maps.values())  # the worker that ran the graph: searched
        for library in ("tensorflow", "pandas", "scipy"):  # mlflow would bring pandas and SciPy
            loaded = [pid for pid, m in maps.items() if f"/{library}/" in m]
            assert not loaded, f"processes {loaded} loaded {library}"
