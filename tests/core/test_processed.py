"""pneumo.processed: the patient split, balancing, context storage, and a raw folder processed end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pneumo.processed as processed_module
from pneumo.augment import context_side
from pneumo.config import load_params
from pneumo.datasets import DataError
from pneumo.network import parts_dataset
from pneumo.processed import (
    balance,
    build_processed,
    load_contexts,
    load_split,
    read_contexts,
    sample_split,
    save_contexts,
    split_patients,
    split_rows,
)


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


def test_contexts_round_trip(tmp_path: Path):
    contexts = [np.full((8, 12), 1, np.uint8), np.full((10, 8), 2, np.uint8)]
    save_contexts(tmp_path / "train_context-00000.npz", contexts, np.array([0, 1]))
    loaded, y = read_contexts(tmp_path / "train_context-00000.npz")
    assert [c.shape for c in loaded] == [(8, 12), (10, 8)] and y.tolist() == [0, 1]
    assert all(np.array_equal(a, b) for a, b in zip(loaded, contexts, strict=True))


@pytest.fixture
def raw_copy(synthetic_dir: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_dir, raw)
    return raw


def test_preprocess_writes_disjoint_balanced_splits(raw_copy: Path):
    params = load_params("test")
    processed = Path(build_processed(str(raw_copy), params, "v-test"))
    table = pd.read_csv(processed / "split.csv")
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    size = params["data"]["image_size"]
    for split in ("train", "val", "test"):
        x, y = load_split(str(processed), split)
        assert x.dtype == np.uint8 and x.shape[1:] == (size, size)
        assert set(y.tolist()) == {0, 1}
    _, y_train = load_split(str(processed), "train")
    assert np.bincount(y_train)[0] == np.bincount(y_train)[1]  # balanced by augmentation
    assert len(y_train) > (table["split"] == "train").sum()
    _, y_test = load_split(str(processed), "test")
    assert len(y_test) == (table["split"] == "test").sum()  # val/test are never augmented


def test_unreadable_images_are_skipped_and_counted(raw_copy: Path):
    images = sorted((raw_copy / "images").glob("*.png"))
    images[0].write_bytes(b"garbage")
    images[1].write_bytes(images[1].read_bytes()[:100])  # truncated
    processed = Path(build_processed(str(raw_copy), load_params("test"), "v-broken"))
    summary = json.loads((processed / "summary.json").read_text())
    assert summary["unreadable"] == 2
    table = pd.read_csv(processed / "split.csv")
    assert images[0].name not in {Path(p).name for p in table["path"]}


def test_preprocess_is_reused_for_same_data_and_params(raw_copy: Path):
    params = load_params("test")
    first = build_processed(str(raw_copy), params, "v-same")
    marker = Path(first) / "summary.json"
    stamp = marker.stat().st_mtime_ns
    assert build_processed(str(raw_copy), params, "v-same") == first
    assert marker.stat().st_mtime_ns == stamp
    other = load_params("test", {"data": {"seed": 1}})
    assert build_processed(str(raw_copy), other, "v-same") != first


def test_online_augmentation_keeps_context_images_unbalanced(raw_copy: Path):
    params = load_params("test", {"data": {"augment": {"online": True}}})
    processed = Path(build_processed(str(raw_copy), params, "v-online"))
    contexts, y = load_contexts(str(processed))
    table = pd.read_csv(processed / "split.csv")
    assert len(contexts) == len(y) == (table["split"] == "train").sum()  # balanced while training
    side = context_side(params["data"]["image_size"], params["data"]["augment"])
    assert side > params["data"]["image_size"]  # views are scaled down, as at inference
    squeeze = params["data"]["augment"]["squeeze"]
    assert all(min(c.shape) == side and max(c.shape) <= side * squeeze for c in contexts)
    _, y_train = load_split(str(processed), "train")
    assert np.array_equal(y_train, y)


def test_parts_are_random_samples_streamed_one_at_a_time(raw_copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(processed_module, "PART_ROWS", 50)
    params = load_params("test", {"data": {"balance": False}})
    folder = build_processed(str(raw_copy), params, "v-parts")
    summary = json.loads((Path(folder) / "summary.json").read_text())
    assert summary["parts"] == 5
    table = pd.read_csv(Path(folder) / "split.csv")
    assert table.groupby("part").size().max() <= 50
    assert table.groupby("part")["label"].mean().between(0.1, 0.9).all()  # no part of one class
    x_test, y_test = load_split(folder, "test")
    assert y_test.tolist() == split_rows(folder, "test")["label"].tolist()  # rows and pixels in step
    assert len(x_test) == summary["splits"]["test"]["images"]

    size = params["data"]["image_size"]
    dataset, n = parts_dataset(folder, "train", size, 16, seed=3)
    x_train, y_train = load_split(folder, "train")
    assert n == len(y_train) == summary["splits"]["train"]["images"]
    epochs = [np.concatenate([labels.numpy() for _, labels in dataset]) for _ in range(2)]
    pixels = np.concatenate([images.numpy()[..., 0] for images, _ in dataset])
    assert all(len(epoch) == n and epoch.sum() == y_train.sum() for epoch in epochs)
    assert not np.array_equal(epochs[0], epochs[1])  # a new order every epoch
    assert sorted(map(bytes, pixels.astype(np.uint8))) == sorted(map(bytes, x_train))  # each image once
    ordered, _ = parts_dataset(folder, "train", size, 16, seed=None)
    assert np.array_equal(np.concatenate([labels.numpy() for _, labels in ordered]), y_train)

    sample = sample_split(folder, "train", 7, seed=1)
    assert sample.shape == (7, size, size)
    assert all(any(np.array_equal(image, row) for row in x_train) for image in sample)


def test_balance_within_parts_balances_the_whole(raw_copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(processed_module, "PART_ROWS", 60)
    folder = build_processed(str(raw_copy), load_params("test"), "v-balanced-parts")
    _, y_train = load_split(folder, "train")
    assert np.bincount(y_train)[0] == np.bincount(y_train)[1]
