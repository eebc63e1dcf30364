"""`pneumo calibrate`: a site's threshold chosen on its own labelled images, stored on the version,
then used by `pneumo evaluate --site` and by the real service started with PNEUMO_SITE."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import mlflow
import pytest
import requests
from conftest import SERVING_MODEL, run_cli, running_service
from PIL import Image

from pneumo.contract import SiteThreshold
from pneumo.monitoring.records import read_records
from pneumo.synth import generate
from pneumo.tasks.registry import history

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHAMPION = f"models:/{SERVING_MODEL}@champion"


@pytest.fixture(scope="module")
def site_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled sample of a site's images: 160 in class folders, about half of them pneumonia."""
    folder = tmp_path_factory.mktemp("site") / "north"
    generate(folder, n=160, seed=21, size=110, prevalence=0.5, layout="folders")
    return folder


def _tags(served_model: dict) -> dict[str, str]:
    return mlflow.MlflowClient().get_model_version(SERVING_MODEL, served_model["version"]).tags


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_sample_too_small_for_the_confidence_is_refused(served_model: dict, tmp_path: Path):
    generate(tmp_path / "few", n=40, seed=22, size=110, prevalence=0.5, layout="folders")
    result = run_cli("calibrate", "--data", str(tmp_path / "few"), "--site", "tiny", "--model", CHAMPION,
                     "--confidence", "0.95")  # fmt: skip
    assert result.returncode == 2 and "at least 59" in result.stderr, result.stderr[-2000:]
    assert "site.tiny" not in _tags(served_model)
    bad = run_cli("calibrate", "--data", str(tmp_path / "few"), "--site", "no spaces", "--model", CHAMPION)
    assert bad.returncode == 2 and "site name" in bad.stderr


def test_with_confidence_the_lower_bound_meets_the_target(
    served_model: dict, site_images: Path, tmp_path: Path
):
    out = tmp_path / "site.json"
    result = run_cli("calibrate", "--data", str(site_images), "--site", "careful", "--model", CHAMPION,
                     "--target-sensitivity", "0.8", "--confidence", "0.9", "--dry-run", "--json", str(out),
                     "--resamples", "50")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    chosen = json.loads(out.read_text())
    assert chosen["confidence"] == 0.9 and chosen["sensitivity_bound"] >= 0.8
    assert chosen["sensitivity"] >= chosen["sensitivity_bound"]
    assert "lower 90% confidence bound of sensitivity" in result.stdout and "nothing stored" in result.stdout
    assert "site.careful" not in _tags(served_model)  # a dry run


def test_a_site_threshold_is_stored_measured_and_served(
    served_model: dict, site_images: Path, tmp_path: Path, xray: Image.Image
):
    out = tmp_path / "north.json"
    result = run_cli("calibrate", "--data", str(site_images), "--site", "north", "--model", CHAMPION,
                     "--json", str(out), "--resamples", "200")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    stored = SiteThreshold.from_tag_value(_tags(served_model)["site.north"])
    assert stored.threshold == json.loads(out.read_text())["threshold"]
    positives = len(list((site_images / "PNEUMONIA").iterdir()))
    assert stored.images == 160 and stored.positives == positives and stored.sensitivity >= 0.95
    for metric in ("sensitivity", "specificity"):
        low, high = stored.intervals[metric]
        assert low <= getattr(stored, metric) <= high
    assert f"site north: threshold {stored.threshold:.4f}" in result.stdout
    assert "expected sensitivity" in result.stdout and "PNEUMO_SITE=north" in result.stdout
    assert any(e["event"] == "calibrated" and e.get("site") == "north" for e in history(SERVING_MODEL))

    report_file = tmp_path / "evaluate.json"
    measured = run_cli("evaluate", "--data", str(site_images), "--model", CHAMPION, "--site", "north",
                       "--json", str(report_file), "--resamples", "50")  # fmt: skip
    assert measured.returncode == 0, measured.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert report["site"] == "north" and report["threshold"] == stored.threshold
    assert report["sensitivity"] == pytest.approx(stored.sensitivity) and "(site north)" in measured.stdout
    unknown = run_cli("evaluate", "--data", str(site_images), "--model", CHAMPION, "--site", "south")
    assert unknown.returncode == 2 and "no threshold for site 'south'" in unknown.stderr
    assert "pneumo calibrate" in unknown.stderr

    records = f"sqlite:///{tmp_path / 'records.db'}"
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_RECORDS_URL": records, "PNEUMO_SITE": "north",
           "PNEUMO_RELOAD_INTERVAL": "1"}  # fmt: skip
    with running_service(env, ready="/ready") as url:
        ready = requests.get(f"{url}/ready", timeout=10).json()
        assert ready["site"] == "north" and ready["site_threshold"] is True
        answer = requests.post(f"{url}/predict", files={"file": ("x.png", _png(xray))}, timeout=30).json()
        assert answer["site"] == "north" and answer["threshold"] == pytest.approx(stored.threshold, abs=1e-6)
        assert (answer["label"] == "PNEUMONIA") == (answer["probability"] >= answer["threshold"])

        # Calibrated again (a lower target): the running service follows without a restart.
        again = run_cli("calibrate", "--data", str(site_images), "--site", "north", "--model", CHAMPION,
                        "--target-sensitivity", "0.6", "--resamples", "50")  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        new = SiteThreshold.from_tag_value(_tags(served_model)["site.north"])
        assert new.threshold > stored.threshold and new.target_sensitivity == 0.6
        deadline = time.monotonic() + 30
        while requests.get(f"{url}/ready", timeout=10).json()["threshold"] != new.threshold:
            assert time.monotonic() < deadline, "the service kept the old site threshold"
            time.sleep(0.5)
        answer = requests.post(f"{url}/predict", files={"file": ("x.png", _png(xray))}, timeout=30).json()
        assert answer["threshold"] == pytest.approx(new.threshold, abs=1e-6) and answer["site"] == "north"
    rows = read_records(records)
    assert len(rows) == 2 and all(row["site"] == "north" for row in rows)
    assert sorted(row["threshold"] for row in rows) == pytest.approx([stored.threshold, new.threshold])


def test_a_site_not_calibrated_on_the_version_gets_its_own_threshold(
    served_model: dict, tmp_path: Path, xray
):
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_RECORDS_URL": f"sqlite:///{tmp_path / 'r.db'}",
           "PNEUMO_SITE": "south"}  # fmt: skip
    with running_service(env, ready="/ready") as url:
        ready = requests.get(f"{url}/ready", timeout=10).json()
        assert ready["site"] == "south" and ready["site_threshold"] is False
        answer = requests.post(f"{url}/predict", files={"file": ("x.png", _png(xray))}, timeout=30).json()
    assert answer["site"] is None and answer["threshold"] == pytest.approx(
        served_model["threshold"], abs=1e-6
    )


def test_a_site_name_that_cannot_be_one_stops_the_service_at_start(served_model: dict, tmp_path: Path):
    from pneumo.serving import create_app

    with pytest.raises(ValueError, match="site name"):
        create_app({"MODEL_NAME": SERVING_MODEL, "SITE": "../etc", "RELOAD_INTERVAL_S": 0,
                    "RECORDS_URL": f"sqlite:///{tmp_path / 'r.db'}"})  # fmt: skip
