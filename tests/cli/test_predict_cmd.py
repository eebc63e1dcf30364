"""pneumo predict: batch predictions over files and folders give the service's own answers, and a
row with the reason for every file the service would refuse."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from conftest import SERVING_MODEL, run_cli
from dicomfiles import dicom_from_gray
from PIL import Image

pytestmark = pytest.mark.integration


def test_a_folder_and_files_are_predicted_as_the_service_answers(served_model, client, xray, tmp_path: Path):
    folder = tmp_path / "audit" / "nested"
    folder.mkdir(parents=True)
    gray = xray.convert("L")
    gray.save(folder / "a.png")
    gray.rotate(5).save(folder / "b.jpg", quality=90)
    (folder / "c.dcm").write_bytes(dicom_from_gray(gray))
    Image.new("L", (100, 4000)).save(folder / "strip.png")
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    out = tmp_path / "predictions.csv"

    result = run_cli("predict", str(tmp_path / "audit"), str(broken), "--out", str(out),
                     "--model", f"models:/{SERVING_MODEL}@champion")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 predicted" in result.stderr and "2 refused" in result.stderr
    table = pd.read_csv(out).set_index("file")
    assert len(table) == 5 and set(table["model_version"].astype(str)) == {str(served_model["version"])}
    assert "too elongated" in table.loc[str(folder / "strip.png"), "error"]
    assert "not a readable image" in table.loc[str(broken), "error"]
    for name in ("a.png", "b.jpg", "c.dcm"):
        data = (folder / name).read_bytes()
        answer = client.post("/predict", data={"file": (io.BytesIO(data), name)}).get_json()
        row = table.loc[str(folder / name)]
        assert row["label"] == answer["label"], name
        assert abs(row["probability"] - answer["probability"]) < 1e-5, name
        assert row["threshold"] == pytest.approx(answer["threshold"], abs=1e-6)


def test_nothing_to_predict_is_an_error(served_model, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = run_cli("predict", str(tmp_path / "empty"), "--model", f"models:/{SERVING_MODEL}@champion")
    assert result.returncode == 2 and "no image files" in result.stderr
    result = run_cli("predict", str(tmp_path / "missing.png"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "junk.png").write_bytes(b"junk")
    result = run_cli("predict", str(tmp_path / "junk.png"), "--model", f"models:/{SERVING_MODEL}@champion")
    assert result.returncode == 1 and "0 predicted" in result.stderr
    assert "not a readable image" in result.stdout  # the CSV on standard output
