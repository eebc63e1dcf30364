"""The processed-data format, and how a raw folder becomes one: label filter, patient-level split,
resize, and class balance by augmentation.

Writes one ``.npz`` per split (``x``: uint8 ``(N, size, size)``, ``y``: int labels) plus
``split.csv`` (every kept image and its split) and ``summary.json`` into the processed folder.
With ``data.augment.online`` the training split is balanced while training instead, from fresh
random views of its context images (``train_context.npz``, see :mod:`pneumo.augment`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pneumo.augment import context_side
from pneumo.config import workdir
from pneumo.datasets import DataError, read_labelled
from pneumo.prepared import context_images, prepared_images

SPLITS = ("train", "val", "test")
FORMAT = 3  # of the processed folder: part of its cache key, so older folders are not reused


def split_patients(table: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    """Assign every row a split so that no patient is in two splits, stably as the data grows.

    Patients are stratified by label (a patient with any positive image counts as positive); each
    stratum is ordered by a hash of ``seed`` and the patient id, then cut into test, val and train.
    A patient's place in that order never depends on who else is in the data set, so new data
    moves only the few patients next to a cut: a model retrained on grown data is tested on
    patients the champion was tested on, not on the ones it trained on.

    Raises:
        DataError: a class has too few patients to put one in every split.
    """
    patient_label = table.groupby("patient_id")["label"].max()
    assignment: dict[str, str] = {}
    for label, patients in patient_label.groupby(patient_label):
        ids = sorted(patients.index, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        n_test, n_val = max(1, round(len(ids) * test)), max(1, round(len(ids) * val))
        if len(ids) < n_test + n_val + 1:
            raise DataError(f"class {label} has {len(ids)} patients: too few for three splits")
        assignment.update({p: "test" for p in ids[:n_test]})
        assignment.update({p: "val" for p in ids[n_test : n_test + n_val]})
        assignment.update({p: "train" for p in ids[n_test + n_val :]})
    return table["patient_id"].map(assignment)


def augment(image: np.ndarray, rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
    """One random variant of a prepared image: rotation, horizontal flip, brightness."""
    pil = Image.fromarray(image)
    angle = rng.uniform(-params["rotation_deg"], params["rotation_deg"])
    pil = pil.rotate(angle, resample=Image.BILINEAR, fillcolor=int(np.percentile(image, 5)))
    out = np.asarray(pil, np.float32)
    if params["horizontal_flip"] and rng.random() < 0.5:
        out = out[:, ::-1]
    out = out * (1.0 + rng.uniform(-params["brightness"], params["brightness"]))
    return np.clip(out, 0, 255).astype(np.uint8)


def balance(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, params: dict[str, Any]):
    """Add augmented copies of the minority class until both classes are equally frequent."""
    counts = np.bincount(y, minlength=2)
    minority = int(np.argmin(counts))
    needed = int(counts.max() - counts.min())
    if needed == 0:
        return x, y
    sources = rng.choice(np.flatnonzero(y == minority), size=needed, replace=True)
    extra = np.stack([augment(x[i], rng, params) for i in sources])
    return np.concatenate([x, extra]), np.concatenate([y, np.full(needed, minority, y.dtype)])


def save_contexts(path: Path, contexts: list[np.ndarray], y: np.ndarray) -> None:
    """Store context images of different shapes as one flat pixel array plus their shapes."""
    shapes = np.array([c.shape for c in contexts], np.int64).reshape(-1, 2)
    pixels = np.concatenate([c.ravel() for c in contexts]) if contexts else np.zeros(0, np.uint8)
    np.savez(path, pixels=pixels, shapes=shapes, y=y)


def load_contexts(processed: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The training split's context images and labels (written with ``data.augment.online``)."""
    with np.load(Path(processed) / "train_context.npz") as arrays:
        pixels, shapes, y = arrays["pixels"], arrays["shapes"], arrays["y"]
    ends = np.cumsum(shapes.prod(axis=1))
    starts = ends - shapes.prod(axis=1)
    return [pixels[a:b].reshape(shape) for a, b, shape in zip(starts, ends, shapes, strict=True)], y


def processed_dir(raw_dir: str, data_params: dict[str, Any], data_version: str) -> Path:
    """Where the processed splits of this data version and these parameters go."""
    key = json.dumps([FORMAT, data_version, data_params], sort_keys=True).encode()
    return workdir() / "data" / "processed" / f"{Path(raw_dir).name}-{hashlib.sha256(key).hexdigest()[:12]}"


def build_processed(
    raw_dir: str, params: dict[str, Any], data_version: str = "", out: str | None = None
) -> str:
    """Build the train/val/test arrays of a raw folder; returns the processed folder.

    Unreadable images are skipped and counted, not fatal. Without ``out``, the folder is named
    after the data version and parameters, so a rerun with both unchanged reuses it (the gate
    rebuilds a champion's folder from its restored data version this way).
    """
    data = params["data"]
    out = Path(out) if out else processed_dir(raw_dir, data, data_version)
    if (out / "summary.json").exists():
        print(f"preprocess: reusing {out}")
        return str(out)
    table = read_labelled(Path(raw_dir), data["positive_label"], data["negative_label"])
    images, unreadable = prepared_images(table["path"], data["image_size"], data["square"])
    table = table.drop(index=table.index[unreadable]).reset_index(drop=True)
    if table.empty:
        raise DataError(f"none of the images in {raw_dir} could be read")
    table["split"] = split_patients(table, data["val_fraction"], data["test_fraction"], data["seed"])

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(data["seed"])
    summary: dict[str, Any] = {"images": len(table), "unreadable": len(unreadable), "splits": {}}
    for split in SPLITS:
        mask = (table["split"] == split).to_numpy()
        x, y = images[mask], table.loc[mask, "label"].to_numpy(np.int64)
        if split == "train" and data["augment"]["online"]:
            side = context_side(data["image_size"], data["augment"])
            squeeze = data["augment"]["squeeze"]
            contexts = context_images(table.loc[mask, "path"], side, squeeze, data["square"])
            save_contexts(out / "train_context.npz", contexts, y)
        elif split == "train" and data["balance"]:
            x, y = balance(x, y, rng, data["augment"])
        np.savez(out / f"{split}.npz", x=x, y=y)
        summary["splits"][split] = {"images": len(y), "positives": int(y.sum())}
    table.to_csv(out / "split.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"preprocess: {json.dumps(summary)}")
    return str(out)


def split_rows(processed: str, split: str) -> pd.DataFrame:
    """The rows of ``split.csv`` (path, label, patient_id, ...) that belong to one split."""
    table = pd.read_csv(Path(processed) / "split.csv")
    return table[table["split"] == split]


def load_split(processed: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``x`` (uint8) and ``y`` arrays of one split of a processed folder."""
    with np.load(Path(processed) / f"{split}.npz") as arrays:
        return arrays["x"], arrays["y"]
