"""The prediction page driven in a real browser (Debian's chromium through Playwright): upload an
X-ray to the real service, read the answer, confirm it, then correct it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import SERVING_MODEL, running_service
from dicomfiles import dicom_from_gray
from PIL import Image

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


def test_a_clinician_analyses_several_files_confirms_and_corrects_on_the_page(
    served_model: dict, browser_page, tmp_path: Path, synthetic_dir: Path
):
    records = f"sqlite:///{tmp_path / 'records.db'}"
    xray = next((synthetic_dir / "images").glob("*.png"))
    dicom = tmp_path / "chest.dcm"
    dicom.write_bytes(dicom_from_gray(Image.open(xray)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_RECORDS_URL": records}
    with running_service(env, ready="/ready") as url:
        page = browser_page
        page.goto(url)
        page.wait_for_function("document.getElementById('model-line').textContent.includes('v')")
        assert f"Model {SERVING_MODEL} v{served_model['version']}" in page.inner_text("#model-line")
        meaning = page.inner_text("#operating-point")  # what the threshold means for this model
        sensitivity = f"{served_model['test_sensitivity'] * 100:.1f}%"
        assert "the version's test split" in meaning and sensitivity in meaning

        page.set_input_files("#file", [str(xray), str(dicom), str(broken)])
        page.click("#submit")
        page.wait_for_function("document.getElementById('progress').textContent.includes('3 files analysed')",
                               timeout=120_000)  # fmt: skip
        cards = page.locator("#results .card")
        assert cards.count() == 3
        png_card, dicom_card, broken_card = (cards.nth(i) for i in range(3))
        assert png_card.locator(".file").inner_text() == xray.name
        label = png_card.locator(".label").inner_text()
        assert label in ("PNEUMONIA", "NORMAL")
        assert dicom_card.locator(".label").inner_text() == label  # the DICOM of the same image
        verdict = png_card.locator(".verdict").inner_text()
        assert verdict.startswith("Above the screening threshold" if label == "PNEUMONIA" else "Below")
        assert png_card.locator(".probability").inner_text().endswith("%")
        assert png_card.locator(".threshold-value").inner_text().endswith("(the model's own)")
        marker = png_card.locator(".bar .threshold").evaluate("e => e.style.left")
        assert marker.endswith("%") and 0 < float(marker[:-1]) < 100  # the threshold marked on the bar
        assert png_card.locator(".heat").get_attribute("src").startswith("data:image/png;base64,")
        png_card.locator(".opacity").fill("20")
        assert png_card.locator(".heat").evaluate("e => e.style.opacity") == "0.2"
        assert "Could not analyse this file" in broken_card.locator(".error").inner_text()
        assert not broken_card.locator(".answer").is_visible()
        request_id = png_card.locator(".request").inner_text().split()[0]

        png_card.locator(".confirm").click()
        status = png_card.locator(".feedback-status")
        status.filter(has_text="Recorded").wait_for()
        assert status.inner_text() == f"Recorded: {label} (the model was right)."
        png_card.locator(".correct").click()
        status.filter(has_text="Replaces").wait_for()
        other = "NORMAL" if label == "PNEUMONIA" else "PNEUMONIA"
        assert (
            status.inner_text() == f"Recorded: {other} (the model was wrong). Replaces the earlier {label}."
        )
    rows = {row["request_id"]: row for row in read_records(records)}
    assert len(rows) == 2 and rows[request_id]["confirmed_label"] == other
    assert [entry["label"] for entry in feedback_history(make_engine(records), request_id)] == [label, other]
