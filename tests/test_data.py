"""Data tests: the preprocess step on a generated set, including unreadable files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumo.augment import context_side
from pneumo.config import load_params
from tasks.preprocess import load_contexts, load_split, preprocess


@pytest.fixture
def raw_copy(synthetic_dir: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_dir, raw)
    return raw


def test_preprocess_writes_disjoint_balanced_splits(raw_copy: Path):
    params = load_params("test")
    processed = Path(preprocess.fn(str(raw_copy), params, "v-test"))
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
    processed = Path(preprocess.fn(str(raw_copy), load_params("test"), "v-broken"))
    summary = json.loads((processed / "summary.json").read_text())
    assert summary["unreadable"] == 2
    table = pd.read_csv(processed / "split.csv")
    assert images[0].name not in {Path(p).name for p in table["path"]}


def test_preprocess_is_reused_for_same_data_and_params(raw_copy: Path):
    params = load_params("test")
    first = preprocess.fn(str(raw_copy), params, "v-same")
    marker = Path(first) / "summary.json"
    stamp = marker.stat().st_mtime_ns
    assert preprocess.fn(str(raw_copy), params, "v-same") == first
    assert marker.stat().st_mtime_ns == stamp
    other = load_params("test", {"data": {"seed": 1}})
    assert preprocess.fn(str(raw_copy), other, "v-same") != first


def test_online_augmentation_keeps_context_images_unbalanced(raw_copy: Path):
    params = load_params("test", {"data": {"augment": {"online": True}}})
    processed = Path(preprocess.fn(str(raw_copy), params, "v-online"))
    contexts, y = load_contexts(str(processed))
    table = pd.read_csv(processed / "split.csv")
    assert len(contexts) == len(y) == (table["split"] == "train").sum()  # balanced while training
    side = context_side(params["data"]["image_size"], params["data"]["augment"])
    assert side > params["data"]["image_size"]  # views are scaled down, as at inference
    squeeze = params["data"]["augment"]["squeeze"]
    assert all(min(c.shape) == side and max(c.shape) <= side * squeeze for c in contexts)
    _, y_train = load_split(str(processed), "train")
    assert np.array_equal(y_train, y)
