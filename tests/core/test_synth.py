"""pneumo.synth: the deterministic synthetic data set."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pneumo.datasets import read_labelled
from pneumo.synth import NIH_CSV, generate


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()


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
