"""The prediction page driven in a real browser (Debian's chromium through Playwright): upload an
X-ray to the real service, read the answer, confirm it, then correct it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SERVING_MODEL, running_service

from pneumo.monitoring.records import feedback_history, make_engine, read_records

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page()
        browser.close()


def test_a_clinician_predicts_confirms_and_corrects_on_the_page(
    served_model: dict, browser_page, tmp_path: Path, synthetic_dir: Path
):
    records = f"sqlite:///{tmp_path / 'records.db'}"
    xray = next((synthetic_dir / "images").glob("*.png"))
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_RECORDS_URL": records}
    with running_service(env, ready="/ready") as url:
        page = browser_page
        page.goto(url)
        page.wait_for_function("document.getElementById('model-line').textContent.includes('v')")
        assert f"Model {SERVING_MODEL} v{served_model['version']}" in page.inner_text("#model-line")
        page.set_input_files("#file", str(xray))
        page.click("#submit")
        page.wait_for_selector("#result", state="visible", timeout=60_000)
        label = page.inner_text("#label")
        assert label in ("PNEUMONIA", "NORMAL")
        assert page.inner_text("#probability").endswith("%")  # the calibrated probability
        assert page.inner_text("#threshold").endswith("(the model's own)")
        assert page.get_attribute("#heatmap", "src").startswith("data:image/png;base64,")  # Grad-CAM shown
        request_id = page.inner_text("#request").split()[0]

        page.click("#confirm")
        page.wait_for_function(
            "document.getElementById('feedback-status').textContent.startsWith('Recorded')"
        )
        assert page.inner_text("#feedback-status") == f"Recorded: {label} (the model was right)."
        page.click("#correct")
        page.wait_for_function("document.getElementById('feedback-status').textContent.includes('Replaces')")
        other = "NORMAL" if label == "PNEUMONIA" else "PNEUMONIA"
        assert page.inner_text("#feedback-status") == (
            f"Recorded: {other} (the model was wrong). Replaces the earlier {label}."
        )
    (row,) = read_records(records)
    assert row["request_id"] == request_id and row["confirmed_label"] == other
    assert [entry["label"] for entry in feedback_history(make_engine(records), request_id)] == [label, other]
