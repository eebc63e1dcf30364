"""Drift monitoring with the real stack: images sent through the real API, the monitoring flow,
Evidently reports in S3, and retraining started as a run of the training deployment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import cancel_scheduled_trainings, champion_copy, send_images
from PIL import Image

from pneumo.config import Settings
from pneumo.contract import SiteThreshold
from pneumo.datasets import read_labelled
from pneumo.flows.monitoring_flow import monitoring
from pneumo.monitoring.records import LABELS, add_feedback, make_engine
from pneumo.serving import create_app
from pneumo.storage import s3_client, split_uri
from pneumo.synth import generate
from pneumo.tasks.retrain import RETRAIN_TAG, recent_retrainings

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
MODEL = "pneumonia-monitoring-test"


@pytest.fixture(scope="module")
def monitored(served_model: dict, deployments) -> Iterator[dict]:
    """A champion with its training reference (a copy of the session's trained model), and the
    deployments registered."""
    summary = champion_copy(served_model, MODEL)
    yield summary
    cancel_scheduled_trainings(MODEL)  # a later module's worker must not train them


@pytest.fixture(scope="module")
def fresh_images(tmp_path_factory) -> list[Image.Image]:
    """New images from the training distribution (another seed)."""
    out = tmp_path_factory.mktemp("fresh")
    generate(out, n=80, seed=11, size=96)
    return [Image.open(p).copy() for p in sorted((out / "images").glob("*.png"))]


def shifted(image: Image.Image, index: int) -> Image.Image:
    """A scanner or export change: inverted, darker, resized or noisier."""
    pixels = np.asarray(image, np.float32)
    kind = index % 4
    if kind == 0:
        return Image.fromarray((255 - pixels).astype(np.uint8))
    if kind == 1:
        return Image.fromarray((pixels * 0.45).astype(np.uint8))
    if kind == 2:
        return image.resize((200, 150))
    noise = np.random.default_rng(index).normal(0, 40, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def send(images: list[Image.Image], records_url: str, confirmed: list[str] | None = None) -> list[dict]:
    return send_images(images, records_url, MODEL, confirmed)


def run(records_url: str) -> dict:
    return monitoring(model_name=MODEL, records_url=records_url)


def _read_json(stack: Settings, uri: str) -> dict:
    bucket, key = split_uri(uri)
    return json.loads(s3_client(stack).get_object(Bucket=bucket, Key=key)["Body"].read())


def test_training_distribution_gives_no_drift(
    monitored, synthetic_dir: Path, tmp_path: Path, stack: Settings, records_url: str
):
    """Images of the training data set (same label mix), each with its true diagnosis confirmed by a
    clinician: no drift, live performance like the champion's, no retraining."""
    url = records_url
    table = read_labelled(synthetic_dir)
    images = [Image.open(path).copy() for path in table["path"]]
    send(images, url, [LABELS[label] for label in table["label"]])
    summary = run(url)
    assert summary["records"] == len(images)
    assert summary["decision"] == "no drift", summary
    assert summary["drift_share"] <= 0.3 and summary["drift_threshold"] == 0.3
    assert 0 < summary["positive_rate"] < 1
    assert summary["reference_version"] == monitored["version"]
    performance = summary["performance"]
    assert performance["labelled"] == len(images) and performance["positives"] == int(table["label"].sum())
    for metric in ("auc", "sensitivity", "specificity"):
        low, high = performance["intervals"][metric]
        assert low <= performance[metric] <= high
        assert performance["champion"][metric] == pytest.approx(monitored[f"test_{metric}"], abs=1e-4)
    assert performance["degraded"] is None
    report = _read_json(stack, summary["report_uris"]["json"])
    assert report["decision"] == "no drift" and report["performance"]["labelled"] == len(images)


def test_too_few_records_give_no_decision(monitored, fresh_images, tmp_path: Path, records_url: str):
    url = records_url
    send(fresh_images[:5], url)
    summary = run(url)
    assert summary["decision"] == "insufficient data" and summary["records"] == 5
    assert "html" not in summary["report_uris"] and "json" in summary["report_uris"]


def test_shifted_inputs_drift_report_and_retrain_once(
    monitored, fresh_images, tmp_path: Path, stack: Settings, records_url: str
):
    """No worker runs in this module: the retraining stays SCHEDULED, and scheduled counts."""
    url = records_url
    send([shifted(image, i) for i, image in enumerate(fresh_images)], url)
    before = recent_retrainings("training/training", 1, MODEL)

    first = run(url)
    assert first["decision"] == "retrain", first
    assert first["drift_share"] > 0.3 and {"mean", "width"} <= set(first["drifted_columns"])
    started = first["retraining"]
    assert started["state"] == "SCHEDULED"
    assert started["parameters"] == {
        "source": monitored["data_source"],
        "profile": "test",
        "overrides": {"registry": {"model_name": MODEL}},
        "trigger": "drift",
    }
    html_bucket, html_key = split_uri(first["report_uris"]["html"])
    html = s3_client(stack).get_object(Bucket=html_bucket, Key=html_key)["Body"].read().decode()
    assert "<html" in html[:2000].lower()
    assert "Drift report: retrain" in html and started["name"] in html  # the decision on top
    assert (
        "Dataset drift detection threshold is 0.3" in html
    )  # Evidently's verdict at the project's threshold
    assert len(recent_retrainings("training/training", 1, MODEL)) == len(before) + 1

    second = run(url)  # the same drift again, inside the cooldown
    assert second["decision"] == "cooldown", second
    assert second["waiting_for"]["name"] == started["name"] and "Scheduled" in second["reason"]
    assert len(recent_retrainings("training/training", 1, MODEL)) == len(before) + 1
    report = _read_json(stack, second["report_uris"]["json"])
    assert report["waiting_for"]["flow_run"] == started["flow_run"]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run_ = client.read_flow_run(started["flow_run"])
    assert RETRAIN_TAG in run_.tags and run_.deployment_id is not None
    assert run_.parameters["source"] == monitored["data_source"]


def test_the_report_says_whether_a_site_threshold_still_meets_its_target(
    monitored, synthetic_dir: Path, tmp_path: Path, stack: Settings, records_url: str
):
    """A site's threshold (``pneumo calibrate``) that no longer holds: the service at that site
    decides with it, clinicians confirm the diagnoses, and the report says the site misses its target."""
    client = mlflow.MlflowClient()
    far_too_high = SiteThreshold(site="east", threshold=0.9999, target_sensitivity=0.95, sensitivity=0.95,
                                 specificity=0.9, images=100, positives=50, data="s3://east/sample",
                                 calibrated_at="2026-11-28T06:00:00+00:00")  # fmt: skip
    client.set_model_version_tag(MODEL, monitored["version"], far_too_high.tag, far_too_high.to_tag_value())
    url = records_url
    table = read_labelled(synthetic_dir)
    images = [Image.open(path).copy() for path in table["path"]]
    answers = send_images(images, url, MODEL, [LABELS[label] for label in table["label"]], site="east")
    assert {answer["site"] for answer in answers} == {"east"}
    summary = run(url)
    (check,) = summary["performance"]["sites"]
    assert (
        check["site"] == "east"
        and check["target"] == 0.95
        and check["positives"] == int(table["label"].sum())
    )
    assert check["meets"] is False and check["sensitivity"] < 0.95
    report = _read_json(stack, summary["report_uris"]["json"])
    assert report["performance"]["sites"][0]["meets"] is False
    html_bucket, html_key = split_uri(summary["report_uris"]["html"])
    html = s3_client(stack).get_object(Bucket=html_bucket, Key=html_key)["Body"].read().decode()
    assert "site east: live sensitivity" in html and "calibrate again (pneumo calibrate --site east)" in html
    client.delete_model_version_tag(MODEL, monitored["version"], far_too_high.tag)


def test_a_drop_in_live_performance_is_a_reason_to_retrain_through_the_same_cooldown(
    monitored, fresh_images, tmp_path: Path, stack: Settings, records_url: str
):
    """Inputs like the training data (no drift), but every answer contradicted by the confirmed
    diagnosis: live performance fell, which is a reason to retrain, held by the same cooldown as the
    drift retraining started above."""
    url = records_url
    answers = send(fresh_images[:20], url)
    wrong = [("NORMAL" if answer["label"] == "PNEUMONIA" else "PNEUMONIA") for answer in answers]
    engine = make_engine(url)
    for answer, label in zip(answers, wrong, strict=True):
        add_feedback(engine, answer["request_id"], label)
    few = run(url)  # 20 labels: reported, not yet a reason (min_labelled 30)
    assert few["performance"]["labelled"] == 20 and few["performance"]["degraded"] is None
    assert few["decision"] in ("insufficient data", "no drift"), few

    answers = send(fresh_images[20:], url, [("NORMAL" if i % 2 else "PNEUMONIA") for i in range(60)])
    summary = run(url)
    performance = summary["performance"]
    assert performance["labelled"] == 80 and performance["degraded"], performance
    assert (
        "confirmed diagnoses" in performance["degraded"]
        and "below the champion's test" in performance["degraded"]
    )
    assert summary["decision"] == "cooldown", summary  # the drift retraining above is still scheduled
    assert performance["degraded"] in summary["reason"]
    html_bucket, html_key = split_uri(summary["report_uris"]["html"])
    html = s3_client(stack).get_object(Bucket=html_bucket, Key=html_key)["Body"].read().decode()
    assert "live performance on 80 confirmed diagnoses" in html


def test_reports_page_has_a_row_per_report_and_the_trend(
    monitored, stack: Settings, tmp_path: Path, records_url: str
):
    """What the weekly reviewer reads: each report's numbers and decision, newest first, and the trend."""
    app = create_app({"MODEL_NAME": MODEL, "RELOAD_INTERVAL_S": 0, "RECORDS_URL": records_url})
    client = app.test_client()
    listing = client.get("/reports?format=json").get_json()["reports"]
    assert len(listing) >= 6, "the other monitoring tests saved reports"
    assert [r["name"] for r in listing] == sorted((r["name"] for r in listing), reverse=True)
    newest = listing[0]  # the live-performance report
    assert newest["decision"] == "cooldown" and newest["model_version"] == monitored["version"]
    assert newest["labelled"] == 80 and newest["degraded"] and 0 <= newest["live_sensitivity"] <= 1
    assert newest["records"] == 80 and 0 <= newest["positive_rate"] <= 1 and newest["drift_threshold"] == 0.3
    assert newest["retraining"]["started"] is False and newest["retraining"]["state"]  # waited for
    drifted = next(r for r in listing if r["decision"] == "retrain")
    assert drifted["drift_share"] > 0.3 and drifted["top_drifted"] and drifted["retraining"]["started"]
    page = client.get("/reports").get_data(as_text=True)
    assert "Monitoring reports" in page and page.count("<tr>") == len(listing) + 1
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page and "live sensitivity" in page
    assert "threshold 0.3" in page and "80 confirmed" in page
    with_html = next(r for r in listing if "html" in r)
    opened = client.get(f"/reports/{with_html['html']}")
    assert opened.status_code == 200 and opened.content_type.startswith("text/html")
    assert client.get("/reports/../secrets.txt").status_code == 404
