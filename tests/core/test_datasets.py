"""pneumo.datasets: the NIH CSV and class-folder layouts, and patient ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pneumo.datasets import SOURCES_FILE, DataError, patient_from_filename, read_class_folders, read_labelled
from pneumo.synth import NIH_CSV, generate


def test_nih_loader_keeps_pneumonia_and_no_finding_only(tmp_path: Path):
    generate(tmp_path, n=60, seed=2, size=32)
    raw = pd.read_csv(tmp_path / NIH_CSV)
    table = read_labelled(tmp_path)
    assert set(table["label"]) == {0, 1}
    kept = raw["Finding Labels"].str.contains("Pneumonia") | (raw["Finding Labels"] == "No Finding")
    assert len(table) == kept.sum()
    assert all(Path(p).exists() for p in table["path"])


def test_nih_loader_names_missing_columns(tmp_path: Path):
    generate(tmp_path, n=12, seed=2, size=32)
    raw = pd.read_csv(tmp_path / NIH_CSV).drop(columns=["Patient ID"])
    raw.to_csv(tmp_path / NIH_CSV, index=False)
    with pytest.raises(DataError, match="Patient ID"):
        read_labelled(tmp_path)


def test_class_folders_and_patient_ids(tmp_path: Path):
    for folder, name in [("NORMAL", "IM-0117-0001.jpeg"), ("PNEUMONIA", "person12_bacteria_45.jpeg")]:
        (tmp_path / "train" / folder).mkdir(parents=True)
        Image.new("L", (40, 30)).save(tmp_path / "train" / folder / name)
    table = read_class_folders(tmp_path)
    assert sorted(table["patient_id"]) == ["IM-0117", "person12"]
    assert dict(zip(table["finding"], table["label"], strict=True)) == {"NORMAL": 0, "PNEUMONIA": 1}
    assert patient_from_filename("NORMAL2-IM-0001-0001.jpeg") == "NORMAL2-IM-0001"
    assert patient_from_filename("00000012_001.png") == "00000012_001"


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="no labelled images"):
        read_labelled(tmp_path)


def test_a_snapshot_of_several_sources_reads_each_in_its_own_layout(tmp_path: Path):
    generate(tmp_path / "00-clinic", n=20, seed=1, size=32)  # NIH layout
    feedback = tmp_path / "01-feedback" / "PNEUMONIA"
    feedback.mkdir(parents=True)
    Image.new("L", (32, 32), 90).save(feedback / "0b1c6c2e-request.png")  # one class is enough here
    (tmp_path / SOURCES_FILE).write_text("00-clinic\n01-feedback\n")
    table = read_labelled(tmp_path)
    assert len(table) == len(read_labelled(tmp_path / "00-clinic")) + 1
    row = table[table["path"].str.endswith("0b1c6c2e-request.png")].iloc[0]
    assert row["label"] == 1 and row["patient_id"] == "0b1c6c2e-request"  # its own patient


def test_dicom_files_are_read_and_prepared_like_the_others(tmp_path: Path):
    from dicomfiles import dicom_from_gray

    from pneumo.prepared import prepared_images

    for folder, value in (("NORMAL", 60), ("PNEUMONIA", 190)):
        (tmp_path / folder).mkdir()
        Image.new("L", (64, 64), value).save(tmp_path / folder / f"person{value}_a.png")
        (tmp_path / folder / f"person{value}_b.dcm").write_bytes(
            dicom_from_gray(Image.new("L", (64, 64), value))
        )
    table = read_class_folders(tmp_path)
    assert sorted(Path(p).suffix for p in table["path"]) == [".dcm", ".dcm", ".png", ".png"]
    images, unreadable = prepared_images(table["path"], 32, "crop")
    assert unreadable == [] and images.shape == (4, 32, 32)
    by_file = dict(zip(table["path"].map(lambda p: Path(p).stem), images, strict=True))
    for value in (60, 190):  # the DICOM (MONOCHROME1, 12 bits) prepares as the PNG it was made from
        assert abs(int(by_file[f"person{value}_b"].mean()) - int(by_file[f"person{value}_a"].mean())) <= 1
