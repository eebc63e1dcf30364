"""The prediction service against a real model from the real registry (the seed's four families:
smoke, valid prediction, edge cases, consistency), plus hot reload, auth and the recorded rows."""

from __future__ import annotations

import base64
import io
import threading
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from conftest import SERVING_ADMIN as ADMIN
from conftest import SERVING_MODEL as MODEL
from PIL import Image, PngImagePlugin
from werkzeug.serving import make_server

from pneumo.config import Settings
from pneumo.contract import platt
from pneumo.monitoring.records import read_records
from pneumo.serving import create_app

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _post(client, data: bytes, name: str = "x.png", query: str = ""):
    return client.post(f"/predict{query}", data={"file": (io.BytesIO(data), name)})


# --- smoke -------------------------------------------------------------------------------------------


def test_page_health_and_ready(client, served_model: dict):
    page = client.get("/")
    assert page.status_code == 200 and b'type="file"' in page.data and b"predict" in page.data
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["ready"] and body["model_name"] == MODEL and body["alias"] == "champion"
    assert body["model_version"] == served_model["version"] and body["loaded_at"]
    assert body["registry_reachable"] is True and body["runtime"] == "onnx" and body["gradcam"] == "onnx"


# --- valid predictions -------------------------------------------------------------------------------


def test_prediction_has_every_field(client, xray: Image.Image, served_model: dict):
    response = _post(client, _encode(xray))
    assert response.status_code == 200
    body = response.get_json()
    assert body["label"] in ("PNEUMONIA", "NORMAL")
    assert isinstance(body["probability"], float) and 0.0 <= body["probability"] <= 1.0
    assert body["threshold"] == pytest.approx(served_model["threshold"], abs=1e-6)
    assert (body["label"] == "PNEUMONIA") == (body["probability"] >= body["threshold"])
    calibration = (served_model["calibration_a"], served_model["calibration_b"])  # Platt, fitted on val
    assert body["calibrated_probability"] == pytest.approx(
        float(platt(body["probability"], *calibration)), abs=1e-5
    )
    assert body["site"] is None  # no PNEUMO_SITE: the version's own threshold
    assert body["model_name"] == MODEL and body["model_version"] == served_model["version"]
    assert len(body["request_id"]) == 36 and body["latency_ms"] > 0
    assert "gradcam_png" not in body


def test_explain_returns_a_gradcam_png(client, xray: Image.Image, app):
    body = _post(client, _encode(xray), query="?explain=1").get_json()
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    size = app.extensions["pneumo.model"].current.image_size
    assert heatmap.format == "PNG" and heatmap.size == (size, size) and heatmap.mode == "RGB"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("I;16", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("L", "JPEG"), ("RGB", "PNG")],
)
def test_every_accepted_kind_of_image(client, xray: Image.Image, mode: str, fmt: str):
    sixteen_bit = Image.fromarray(np.asarray(xray, np.uint16) * 257)
    image = sixteen_bit if mode == "I;16" else xray.convert(mode)
    response = _post(client, _encode(image, fmt), name=f"x.{fmt.lower()}")
    assert response.status_code == 200, response.get_json()


def test_raw_image_body(client, xray: Image.Image):
    response = client.post("/predict", data=_encode(xray, "JPEG"), content_type="image/jpeg")
    assert response.status_code == 200 and response.get_json()["label"] in ("PNEUMONIA", "NORMAL")


# --- edge cases: always a 4xx JSON error, never a 5xx ------------------------------------------------


def _bad_inputs(xray: Image.Image) -> list[tuple[str, dict, int]]:
    png = _encode(xray)
    jpeg = _encode(xray.resize((512, 512)), "JPEG", quality=95)
    bomb = _encode(Image.new("L", (12000, 12000)), optimize=True)
    return [
        ("empty file", {"data": {"file": (io.BytesIO(b""), "x.png")}}, 400),
        ("missing field", {"data": {"other": (io.BytesIO(png), "x.png")}}, 400),
        ("no body", {}, 400),
        ("text file", {"data": {"file": (io.BytesIO(b"hello, world\n" * 20), "x.txt")}}, 415),
        ("pdf", {"data": {"file": (io.BytesIO(b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF"), "x.pdf")}}, 415),
        ("gif", {"data": {"file": (io.BytesIO(_encode(xray, "GIF")), "x.gif")}}, 415),
        ("wrong content type", {"data": png, "content_type": "application/json"}, 415),
        ("truncated png", {"data": {"file": (io.BytesIO(png[: len(png) // 2]), "x.png")}}, 422),
        ("truncated jpeg", {"data": {"file": (io.BytesIO(jpeg[: len(jpeg) // 2]), "x.jpg")}}, 422),
        ("decompression bomb", {"data": {"file": (io.BytesIO(bomb), "bomb.png")}}, 413),
    ]


def test_bad_inputs_get_the_right_4xx(client, xray: Image.Image):
    for name, kwargs, status in _bad_inputs(xray):
        response = client.post("/predict", **kwargs)
        assert response.status_code == status, (name, response.get_json())
        assert response.get_json()["error"], name


def test_upload_over_the_limit_is_413(
    served_model: dict, tmp_path: Path, xray: Image.Image, records_url: str
):
    app = create_app(
        {"MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0, "MAX_CONTENT_LENGTH": 50_000,
         "RECORDS_URL": records_url}
    )  # fmt: skip
    big = _encode(Image.effect_noise((400, 400), 80).convert("L"))
    assert len(big) > 50_000
    response = _post(app.test_client(), big)
    assert response.status_code == 413 and "error" in response.get_json()


def test_service_survives_bad_inputs(client, xray: Image.Image):
    for _, kwargs, _ in _bad_inputs(xray):
        client.post("/predict", **kwargs)
    assert _post(client, _encode(xray)).status_code == 200


# --- consistency ----------------------------------------------------------------------------------


def test_identical_images_give_identical_answers(client, xray: Image.Image):
    data = _encode(xray)
    answers = {(b["label"], b["probability"]) for b in (_post(client, data).get_json() for _ in range(15))}
    assert len(answers) == 1


# --- records, auth, metrics ----------------------------------------------------------------------


def test_every_prediction_is_recorded(client, app, xray: Image.Image):
    ids = [_post(client, _encode(xray.convert("RGB"), "JPEG")).get_json()["request_id"] for _ in range(3)]
    _post(client, b"not an image")  # refused requests are not predictions
    app.extensions["pneumo.recorder"].flush()
    rows = read_records(app.config["RECORDS_URL"])
    assert [r["request_id"] for r in rows] == ids
    row = rows[0]
    assert row["model_name"] == MODEL and row["mode"] == "RGB" and row["bit_depth"] == 8
    assert (row["width"], row["height"]) == xray.size
    assert 0 <= row["p5"] <= row["p50"] <= row["p95"] <= 255 and row["std"] > 0 and row["entropy"] > 0
    assert row["created_at"].tzinfo is not None
    assert row["image_uri"] is None  # the image itself is patient data: not stored by default


def test_api_token_guards_predict_when_configured(
    served_model: dict, tmp_path: Path, xray: Image.Image, records_url: str
):
    app = create_app(
        {"MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0, "API_TOKEN": "s3cret",
         "RECORDS_URL": records_url}
    )  # fmt: skip
    client = app.test_client()
    assert _post(client, _encode(xray)).status_code == 401
    ok = client.post(
        "/predict",
        data={"file": (io.BytesIO(_encode(xray)), "x.png")},
        headers={"Authorization": "Bearer s3cret"},
    )
    assert ok.status_code == 200
    assert client.get("/ready").get_json()["auth_required"] is True


def test_admin_needs_its_token(client):
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200 and ok.get_json()["swapped"] is False


def test_metrics_count_requests_and_name_the_model(client, xray: Image.Image, served_model: dict):
    _post(client, _encode(xray))
    client.post("/predict", data=b"x", content_type="text/plain")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'pneumo_requests_total{endpoint="/predict",status="200"}' in text
    assert 'pneumo_requests_total{endpoint="/predict",status="415"}' in text
    assert "pneumo_request_latency_seconds_bucket" in text
    assert (
        f'pneumo_model_info{{alias="champion",name="{MODEL}",version="{served_model["version"]}"}} 1.0'
        in text
    )


# --- model lifecycle --------------------------------------------------------------------------------


def test_no_model_means_not_ready_and_503(
    stack: Settings, tmp_path: Path, xray: Image.Image, records_url: str
):
    app = create_app(
        {
            "MODEL_NAME": "no-such-model",
            "RELOAD_INTERVAL_S": 0,
            "RECORDS_URL": records_url,
        }
    )
    client = app.test_client()
    assert client.get("/ready").status_code == 503
    response = _post(client, _encode(xray))
    assert response.status_code == 503 and "no model" in response.get_json()["error"]


def test_unreachable_registry_keeps_the_model_in_hand(app, client, xray: Image.Image, monkeypatch):
    holder = app.extensions["pneumo.model"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # what the service reads
    assert holder.refresh() is False
    monkeypatch.undo()
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["registry_reachable"] is False
    assert _post(client, _encode(xray)).status_code == 200


def test_hot_reload_under_concurrent_requests_loses_none(app, served_model: dict, xray: Image.Image):
    """Move the alias to a new version while 4 clients keep predicting: every request succeeds."""
    registry = mlflow.MlflowClient()
    old = registry.get_model_version(MODEL, served_model["version"])
    new = mlflow.register_model(old.source, MODEL, tags=old.tags)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    data, results, stop = _encode(xray), [], threading.Event()

    def hammer() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(f"{url}/predict", files={"file": ("x.png", data)}, timeout=30)
                results.append((response.status_code, response.json().get("model_version")))

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        registry.set_registered_model_alias(MODEL, "champion", new.version)
        reload = requests.post(
            f"{url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120
        )
        assert reload.json() == {"swapped": True, "model_version": new.version, "registry_reachable": True,
                                 "error": None}  # fmt: skip
        after = len(results)
        while len(results) < after + 8:
            threading.Event().wait(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
        server.shutdown()
        registry.set_registered_model_alias(MODEL, "champion", old.version)
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    versions = [version for _, version in results]
    assert versions[0] == old.version and versions[-1] == new.version


def test_a_broken_record_store_never_breaks_predictions_and_loses_nothing(
    served_model: dict, tmp_path: Path, xray, caplog, monkeypatch
):
    """The database cannot be written (its folder is missing): predictions still answer, their rows
    wait in the spool on disk, /ready says so; once it can be written, every row is."""
    monkeypatch.setenv("PNEUMO_STATE_DIR", str(tmp_path / "state"))  # a spool of its own
    missing = tmp_path / "not-yet"
    app = create_app(
        {"MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0, "RECORDS_URL": f"sqlite:///{missing}/p.db"}
    )
    client = app.test_client()
    with caplog.at_level("ERROR", logger="pneumo.serving.records"):
        answered = [_post(client, _encode(xray)) for _ in range(3)]
        assert all(response.status_code == 200 for response in answered)
        recorder = app.extensions["pneumo.recorder"]
        recorder.flush()
    assert recorder.dropped == 0 and recorder.written == 0
    failures = [r.getMessage() for r in caplog.records if "could not record prediction" in r.getMessage()]
    assert len(failures) == 3 and all("kept in the spool" in m for m in failures), failures
    records = client.get("/ready").get_json()["records"]
    assert records["ok"] is False and records["pending"]["spooled"] == 3 and records["failing_since"]
    assert "unable to open database file" in records["last_failure"]
    request_id = answered[0].get_json()["request_id"]
    assert client.post("/feedback", json={"request_id": request_id, "label": "NORMAL"}).status_code == 503
    missing.mkdir()  # the store is back: the spooled rows and the next one are written
    assert _post(client, _encode(xray)).status_code == 200
    assert recorder.settle()
    records = client.get("/ready").get_json()["records"]
    assert records == {"ok": True, "written": 4, "dropped": 0, "images_dropped": 0, "failing_since": None,
                       "pending": {"queued": 0, "spooled": 0, "images": 0}, "last_failure": None,
                       "images_failure": None}  # fmt: skip
    assert {row["request_id"] for row in read_records(app.config["RECORDS_URL"])} >= {
        response.get_json()["request_id"] for response in answered
    }
    assert client.post("/feedback", json={"request_id": request_id, "label": "NORMAL"}).status_code == 201


def test_images_go_to_s3_only_when_asked(
    served_model: dict, tmp_path: Path, xray, stack: Settings, records_url: str
):
    from pneumo.storage import s3_client, split_uri

    uri = f"s3://{stack.raw_bucket}/prediction-images"
    app = create_app(
        {"MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0, "STORE_IMAGES_URI": uri,
         "RECORDS_URL": records_url}
    )  # fmt: skip
    named = "Moreau^Hortense^Q7X"  # where PACS exports put the patient's name: text chunks, EXIF, comments
    text = PngImagePlugin.PngInfo()
    text.add_text("Patient", named)
    png, jpeg, exif = io.BytesIO(), io.BytesIO(), Image.Exif()
    xray.save(png, "PNG", pnginfo=text)
    exif[0x010E] = named  # ImageDescription
    xray.convert("RGB").save(jpeg, "JPEG", exif=exif, comment=named.encode())
    sent = [png.getvalue(), jpeg.getvalue()]
    assert all(named.encode() in data for data in sent)
    request_ids = [_post(app.test_client(), data).get_json()["request_id"] for data in sent]
    assert app.extensions["pneumo.recorder"].settle()
    rows = {row["request_id"]: row for row in read_records(app.config["RECORDS_URL"])}
    for request_id, data in zip(request_ids, sent, strict=True):
        assert rows[request_id]["image_uri"].startswith(uri)
        bucket, key = split_uri(rows[request_id]["image_uri"])
        stored = s3_client(stack).get_object(Bucket=bucket, Key=key)["Body"].read()
        assert named.encode() not in stored  # the pixels, and nothing else of the file
        pixels = [np.asarray(Image.open(io.BytesIO(body))) for body in (stored, data)]
        assert np.array_equal(*pixels)


def test_the_service_runs_the_graph_its_version_names(served_model: dict, records_url: str, xray):
    """``serving_graph`` says which graph runs: the float one, or the int8 one that passed the check;
    the service's answer is that graph's output, and /ready says which."""
    from pneumo.contract import GRAPH_TAG, INT8_ARTIFACT, ONNX_ARTIFACT
    from pneumo.images import prepare
    from pneumo.serving.model import onnx_runtime

    client = mlflow.MlflowClient()
    version = client.get_model_version(MODEL, served_model["version"])
    run = client.get_run(served_model["run_id"])
    served = INT8_ARTIFACT if run.data.metrics["int8_served"] else ONNX_ARTIFACT
    assert version.tags[GRAPH_TAG] == served
    try:
        for graph, precision in ((ONNX_ARTIFACT, "float32"), (INT8_ARTIFACT, "int8")):
            client.set_model_version_tag(MODEL, served_model["version"], GRAPH_TAG, graph)
            app = create_app({"TESTING": True, "MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0,
                              "RECORDS_URL": records_url, "ADMIN_TOKEN": ADMIN})  # fmt: skip
            try:
                assert app.test_client().get("/ready").get_json()["precision"] == precision
                answer = _post(app.test_client(), _encode(xray)).get_json()
                model = app.extensions["pneumo.model"].current
                prepared = prepare(xray, model.image_size, model.square)
                expected, _, _ = onnx_runtime(served_model["run_id"], graph)(
                    prepared[np.newaxis, :, :, np.newaxis].astype(np.float32)
                )
                assert answer["probability"] == pytest.approx(float(expected.reshape(-1)[0]), abs=1e-6)
            finally:
                app.extensions["pneumo.model"].stop()
    finally:
        client.set_model_version_tag(MODEL, served_model["version"], GRAPH_TAG, served)


def test_onnx_graph_answers_like_the_keras_model(app, served_model: dict, xray: Image.Image):
    """The service runs the exported ONNX graph; it must agree with the registered Keras model."""
    from pneumo.images import prepare
    from pneumo.models import load_keras
    from pneumo.serving.gradcam import GradCam
    from pneumo.serving.model import keras_runtime, onnx_runtime

    model = app.extensions["pneumo.model"].current
    assert model.runtime == "onnx"
    batch = prepare(xray, model.image_size, model.square)[np.newaxis, :, :, np.newaxis].astype(np.float32)
    onnx_p, onnx_a, onnx_cam = onnx_runtime(served_model["run_id"])(batch)
    keras_model = load_keras(served_model["model_uri"])
    keras_p, keras_a, _ = keras_runtime(keras_model, model.image_size)(batch)
    assert np.allclose(onnx_p, keras_p, atol=1e-5) and np.allclose(onnx_a, keras_a, atol=1e-4)
    # The graph's closed-form Grad-CAM is TensorFlow's gradient-taped one.
    tf_cam = GradCam(keras_model).cam(batch[0, :, :, 0].astype(np.uint8))
    assert onnx_cam.shape == (1, *tf_cam.shape) and onnx_cam.max() > 0.99
    assert np.abs(onnx_cam[0] - tf_cam).max() < 1e-3


def test_a_version_whose_graph_has_no_map_is_explained_by_tensorflow(app, client, xray: Image.Image):
    holder = app.extensions["pneumo.model"]
    graph = holder.current.run
    holder.current = replace(holder.current, run=lambda batch: (*graph(batch)[:2], None))  # an older graph
    body = _post(client, _encode(xray), query="?explain=1").get_json()
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert heatmap.size == (holder.current.image_size,) * 2 and "gradcam_error" not in body
