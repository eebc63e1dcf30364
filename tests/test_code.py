"""Unit tests of the code: config, generator, loaders, split, images, metrics and the gate."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumo.config import load_params, parse_overrides
from pneumo.datasets import DataError, patient_from_filename, read_class_folders, read_labelled
from pneumo.images import ImageError, decode, prepare
from pneumo.metrics import binary_metrics, choose_threshold
from pneumo.synth import NIH_CSV, generate
from pneumo.validation import ParamsError
from tasks.assess import prepare_table
from tasks.preprocess import balance, split_patients


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


def test_profiles_merge_over_base_and_overrides_win():
    params = load_params("demo", parse_overrides(["train.epochs=1", "gate.max_drop.auc=0.1"]))
    assert params["train"]["backbone"] == "small_cnn"
    assert params["train"]["epochs"] == 1
    assert params["gate"]["max_drop"]["auc"] == 0.1
    assert params["data"]["val_fraction"] == load_params()["data"]["val_fraction"]


def test_unknown_profile_and_override_are_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        load_params("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        load_params("default", parse_overrides(["train.epoch=1"]))
    with pytest.raises(ValueError, match=r"section\.key=value"):
        parse_overrides(["epochs"])


def test_generator_is_deterministic_and_labelled(tmp_path: Path):
    rows_a = generate(tmp_path / "a", n=30, seed=3, size=64)
    generate(tmp_path / "b", n=30, seed=3, size=64)
    generate(tmp_path / "c", n=30, seed=4, size=64)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    table = pd.read_csv(tmp_path / "a" / NIH_CSV)
    assert len(table) == len(rows_a) == 30
    assert table["Patient ID"].nunique() < 30  # some patients have follow-ups
    image = Image.open(tmp_path / "a" / "images" / table["Image Index"][0])
    assert image.mode == "L" and image.size == (64, 64)


def test_generator_classes_differ_in_lung_density(tmp_path: Path):
    generate(tmp_path, n=120, seed=1, size=64)
    table = read_labelled(tmp_path)
    means = [np.asarray(Image.open(p), np.float32)[16:48, 8:56].mean() for p in table["path"]]
    table["mean"] = means
    sick, healthy = table[table.label == 1]["mean"], table[table.label == 0]["mean"]
    assert sick.mean() > healthy.mean()  # consolidations are brighter than aerated lung


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


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_is_patient_disjoint_and_stratified(seed: int):
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, 80, size=300).astype(str)
    labels = (patients.astype(int) % 3 == 0).astype(int)
    table = pd.DataFrame({"patient_id": patients, "label": labels})
    split = split_patients(table, 0.15, 0.15, seed)
    per_patient = split.groupby(table["patient_id"]).nunique()
    assert (per_patient == 1).all()
    for name in ("train", "val", "test"):
        assert set(table["label"][split == name]) == {0, 1}
    assert (split == "train").sum() > (split == "test").sum()


def test_split_is_stable_as_the_data_grows():
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(400)]
    labels = rng.integers(0, 2, 400)
    table = pd.DataFrame({"patient_id": patients, "label": labels})
    before = split_patients(table, 0.15, 0.15, 42)
    newcomers = pd.DataFrame({"patient_id": [f"new{i}" for i in range(40)], "label": rng.integers(0, 2, 40)})
    grown = pd.concat([table, newcomers], ignore_index=True)
    after = split_patients(grown, 0.15, 0.15, 42)[: len(table)]
    assert (after == before).mean() > 0.95  # 10% more patients move fewer than 5% of the others
    assert ((before == "train") & (after == "test")).sum() <= 4


def test_split_refuses_too_few_patients():
    table = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "label": [0, 0, 1, 1]})
    with pytest.raises(DataError, match="too few"):
        split_patients(table, 0.15, 0.15, 0)


def test_balance_augments_minority_to_parity():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(10, 16, 16), dtype=np.uint8)
    y = np.array([0] * 7 + [1] * 3)
    params = {"rotation_deg": 10, "horizontal_flip": True, "brightness": 0.1}
    bx, by = balance(x, y, rng, params)
    assert np.bincount(by).tolist() == [7, 7]
    assert bx.shape == (14, 16, 16) and bx.dtype == np.uint8
    assert not any(np.array_equal(bx[i], x[j]) for i in range(10, 14) for j in range(10))


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (300, 200), 128),
        Image.new("RGB", (200, 300), (10, 200, 30)),
        Image.new("RGBA", (120, 120), (255, 255, 255, 0)),
        Image.fromarray(np.linspace(0, 4095, 64 * 48).reshape(48, 64).astype(np.uint16)),
    ],
    ids=["L", "RGB", "RGBA", "16-bit"],
)
def test_prepare_gives_square_uint8_for_every_mode(image: Image.Image):
    out = prepare(image, 32, "crop")
    assert out.shape == (32, 32) and out.dtype == np.uint8


def test_prepare_scales_16_bit_by_its_range():
    pixels = np.linspace(1000, 3000, 64 * 64).reshape(64, 64).astype(np.uint16)
    out = prepare(Image.fromarray(pixels), 64, "crop")
    assert out.min() <= 1 and out.max() >= 254


def test_square_crop_removes_aspect_ratio():
    wide = Image.new("L", (400, 200), 0)
    wide.paste(255, (100, 0, 300, 200))  # bright centre square, dark sides
    assert prepare(wide, 50, "crop").min() == 255
    assert prepare(wide, 50, "pad").min() == 0


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_decode_rejects_unreadable_bytes(data: bytes):
    with pytest.raises(ImageError):
        decode(data)


def test_decode_rejects_truncated_png():
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 7).save(buffer, "PNG")
    with pytest.raises(ImageError):
        decode(buffer.getvalue()[:-30])


def test_threshold_meets_target_sensitivity():
    y = np.array([1] * 20 + [0] * 20)
    p = np.concatenate([np.linspace(0.3, 1.0, 20), np.linspace(0.0, 0.6, 20)])
    threshold = choose_threshold(y, p, 0.95)
    assert binary_metrics(y, p, threshold)["sensitivity"] >= 0.95
    assert binary_metrics(y, p, threshold + 1e-6)["sensitivity"] < 0.95  # the highest such


def test_binary_metrics_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3])
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(5 / 7)


def test_stack_never_claims_a_process_it_did_not_start(tmp_path: Path, monkeypatch):
    import json
    import os

    from pneumo import stack
    from pneumo.config import Settings

    monkeypatch.setenv("PNEUMO_STATE_DIR", str(tmp_path))
    for service in stack.services(Settings.from_env()):
        service.pid_file.parent.mkdir(parents=True, exist_ok=True)
        service.pid_file.write_text(json.dumps({"pid": os.getpid()}))  # a reused pid: this test
    assert all(row["pid"] is None for row in stack.status(Settings.from_env()))
    stack.down(Settings.from_env(), echo=lambda _: None)  # must not signal this process
    assert not any(s.pid_file.exists() for s in stack.services(Settings.from_env()))


def test_train_without_prefect_server_says_what_to_do(monkeypatch):
    from typer.testing import CliRunner

    from pneumo.cli import app

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    result = CliRunner().invoke(app, ["train", "--profile", "test"])
    assert result.exit_code == 2
    assert "pneumo stack up" in result.output


def test_records_are_read_per_model_version_and_window(tmp_path: Path):
    from datetime import UTC, datetime, timedelta

    from serving.records import make_engine, predictions, read_records

    url = f"sqlite:///{tmp_path / 'records.db'}"
    now = datetime.now(UTC)
    rows = [
        {"request_id": f"r{i}", "created_at": now - timedelta(hours=i), "model_name": "m",
         "model_version": str(1 + i % 2), "probability": 0.5, "threshold": 0.5, "label": "NORMAL"}
        for i in range(6)
    ]  # fmt: skip
    with make_engine(url).begin() as connection:
        connection.execute(predictions.insert(), rows)
    picked = read_records(url, now - timedelta(hours=4.5), now + timedelta(seconds=1), "m", "1")
    assert [r["request_id"] for r in picked] == ["r4", "r2", "r0"]  # oldest first, version 1 only
    assert all(r["created_at"].tzinfo is not None for r in picked)
    assert read_records(url, model_name="other") == []


def test_evaluation_refuses_a_folder_without_readable_images_of_both_classes(tmp_path: Path):
    generate(tmp_path, n=12, seed=3, size=32, layout="folders")
    for path in (tmp_path / "PNEUMONIA").glob("*.png"):
        path.write_bytes(b"not a png")
    table = read_labelled(tmp_path)
    with pytest.raises(DataError, match="unreadable"):
        prepare_table(table, 32, "crop")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gate": {"threshold_folds": 1}}, "at least 2"),
        ({"data": {"augment": {"online": False}}}, "online"),
    ],
)
def test_impossible_threshold_folds_are_refused_before_any_work(overrides: dict, message: str):
    with pytest.raises(ParamsError, match=message):
        load_params("xray", overrides)
    assert load_params("xray")["gate"]["threshold_folds"] == 5  # the profile itself is fine
