"""The processed-data format, and how a raw folder becomes one: label filter, patient-level split,
resize, and class balance by augmentation, in parts of :data:`PART_ROWS` images.

A processed folder holds ``split.csv`` (every kept image, its split and its part), ``summary.json``
and ``parts/``: for each part and split one ``<split>-<part>.npz`` (``x``: uint8 ``(n, size, size)``,
``y``: int labels) and, with ``data.augment.online``, ``train_context-<part>.npz`` (the training
images' context images, balanced while training instead, see :mod:`pneumo.augment`), and the
plan: each part's rows (``rows-<part>.parquet``).

Parts are what keeps memory flat as the data grows: each is prepared on its own (by
:func:`write_part`, which the ``preprocess`` flow hands to a Prefect task runner, one task a part)
and training streams them (:func:`iter_parts`). Rows are put into parts in an order fixed by a hash
of the seed and each file's name, so every part is a random sample of the data set and a part's
batches are as mixed as the whole's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
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
FORMAT = 4  # of the processed folder: part of its cache key, so older folders are not reused
PART_ROWS = 1000  # images of one part: 1,000 x 224 x 224 is 50 MB, plus its contexts


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
    """Add augmented copies of the minority class until both classes are equally frequent (a set
    with one class only is returned as it is: there is nothing to copy)."""
    counts = np.bincount(y, minlength=2)
    minority = int(np.argmin(counts))
    needed = int(counts.max() - counts.min())
    if needed == 0 or counts.min() == 0:
        return x, y
    sources = rng.choice(np.flatnonzero(y == minority), size=needed, replace=True)
    extra = np.stack([augment(x[i], rng, params) for i in sources])
    return np.concatenate([x, extra]), np.concatenate([y, np.full(needed, minority, y.dtype)])


def _save(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` whole or not at all (a killed run leaves no half part behind)."""
    partial = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.part.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


def save_contexts(path: Path, contexts: list[np.ndarray], y: np.ndarray) -> None:
    """Store context images of different shapes as one flat pixel array plus their shapes."""
    shapes = np.array([c.shape for c in contexts], np.int64).reshape(-1, 2)
    pixels = np.concatenate([c.ravel() for c in contexts]) if contexts else np.zeros(0, np.uint8)
    _save(path, pixels=pixels, shapes=shapes, y=y)


def read_contexts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The context images and labels of one file written by :func:`save_contexts`."""
    with np.load(path) as arrays:
        pixels, shapes, y = arrays["pixels"], arrays["shapes"], arrays["y"]
    ends = np.cumsum(shapes.prod(axis=1))
    starts = ends - shapes.prod(axis=1)
    return [pixels[a:b].reshape(shape) for a, b, shape in zip(starts, ends, shapes, strict=True)], y


def processed_dir(raw_dir: str, data_params: dict[str, Any], data_version: str) -> Path:
    """Where the processed splits of this data version and these parameters go."""
    key = json.dumps([FORMAT, data_version, data_params], sort_keys=True).encode()
    return workdir() / "data" / "processed" / f"{Path(raw_dir).name}-{hashlib.sha256(key).hexdigest()[:12]}"


def _folder(raw_dir: str, params: dict[str, Any], data_version: str, out: str | None) -> Path:
    return Path(out) if out else processed_dir(raw_dir, params["data"], data_version)


def complete_folder(raw_dir: str, params: dict[str, Any], data_version: str = "", out: str | None = None):
    """The processed folder of this raw folder, data version and parameters if it is complete
    (a run with both unchanged reuses it), else None."""
    folder = _folder(raw_dir, params, data_version, out)
    return str(folder) if (folder / "summary.json").exists() else None


def plan_parts(raw_dir: str, params: dict[str, Any], data_version: str = "", out: str | None = None):
    """The processed folder of a raw folder, and the rows of each part still to write.

    Without ``out``, the folder is named after the data version and parameters, so a rerun with
    both unchanged reuses it (the gate rebuilds a champion's folder from its restored data version
    this way): then there are no parts to write.

    Returns:
        ``(folder, parts)``: ``parts`` is a list of tables (``path``, ``label``, ``patient_id``,
        ``split``, ...), empty when the folder is complete.

    Raises:
        DataError: no labelled images, or too few patients for three splits.
    """
    data = params["data"]
    if (done := complete_folder(raw_dir, params, data_version, out)) is not None:
        print(f"preprocess: reusing {done}")
        return done, []
    folder = _folder(raw_dir, params, data_version, out)
    table = read_labelled(Path(raw_dir), data["positive_label"], data["negative_label"])
    table["split"] = split_patients(table, data["val_fraction"], data["test_fraction"], data["seed"])
    root = Path(raw_dir)
    order = [hashlib.sha256(f"{data['seed']}:{Path(p).relative_to(root).as_posix()}".encode()).hexdigest()
             for p in table["path"]]  # fmt: skip
    table = table.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    shutil.rmtree(folder / "parts", ignore_errors=True)  # a run killed before its summary left these
    (folder / "parts").mkdir(parents=True)
    count = -(-len(table) // PART_ROWS)  # parts of at most PART_ROWS, as equal as can be: no tiny last one
    parts = [table.iloc[rows] for rows in np.array_split(np.arange(len(table)), count)]
    for part, rows in enumerate(parts):  # what a task on another process or machine reads
        rows.to_parquet(part_file(folder, "rows", part).with_suffix(".parquet"))
    return str(folder), parts


def part_rows(folder: str, part: int) -> pd.DataFrame:
    """One part's rows as :func:`plan_parts` planned them (index and dtypes kept)."""
    return pd.read_parquet(part_file(folder, "rows", part).with_suffix(".parquet"))


def part_file(folder: str, split: str, part: int) -> Path:
    """Where one part of one split (or ``train_context``) is stored."""
    return Path(folder) / "parts" / f"{split}-{part:05d}.npz"


def write_part(folder: str, part: int, rows: pd.DataFrame, data: dict[str, Any]) -> dict[str, Any]:
    """Prepare one part's images (through the prepared-image cache) and write its splits.

    Unreadable images are skipped and counted, not fatal. With ``data.balance`` the part's
    training images are balanced by augmented copies (every part is a random sample, so the whole
    is balanced too); with ``data.augment.online`` its context images are stored instead.

    Returns:
        ``part``, the table positions of the ``kept`` rows and the ``unreadable`` count.
    """
    images, unreadable = prepared_images(rows["path"], data["image_size"], data["square"])
    kept = rows.drop(index=rows.index[unreadable])
    rng = np.random.default_rng([data["seed"], part])
    for split in SPLITS:
        mask = (kept["split"] == split).to_numpy()
        x, y = images[mask], kept.loc[mask, "label"].to_numpy(np.int64)
        if split == "train" and data["augment"]["online"]:
            side = context_side(data["image_size"], data["augment"])
            paths = kept.loc[mask, "path"]
            contexts = context_images(paths, side, data["augment"]["squeeze"], data["square"])
            save_contexts(part_file(folder, "train_context", part), contexts, y)
        elif split == "train" and data["balance"]:
            x, y = balance(x, y, rng, data["augment"])
        _save(part_file(folder, split, part), x=x, y=y)
    return {"part": part, "kept": [int(i) for i in kept.index], "unreadable": len(unreadable)}


def finish_parts(folder: str, parts: list[pd.DataFrame], written: list[dict[str, Any]], size: int) -> str:
    """Write ``split.csv`` and ``summary.json`` once every part is written; returns the folder.

    Raises:
        DataError: none of the images could be read.
    """
    by_part = {result["part"]: result for result in written}
    kept = [rows.loc[by_part[k]["kept"]].assign(part=k) for k, rows in enumerate(parts)]
    table = pd.concat(kept) if kept else pd.DataFrame()
    if table.empty:
        raise DataError(f"none of the images for {folder} could be read")
    unreadable = sum(result["unreadable"] for result in written)
    summary: dict[str, Any] = {"images": len(table), "unreadable": unreadable, "parts": len(parts),
                               "image_size": size, "splits": {}}  # fmt: skip
    for split in SPLITS:
        y = np.concatenate([labels for _, labels in iter_labels(folder, split)] or [np.zeros(0, np.int64)])
        summary["splits"][split] = {"images": len(y), "positives": int(y.sum())}
    table.to_csv(Path(folder) / "split.csv", index=False)
    (Path(folder) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"preprocess: {json.dumps(summary)}")
    return folder


def build_processed(
    raw_dir: str, params: dict[str, Any], data_version: str = "", out: str | None = None
) -> str:
    """Build the train/val/test parts of a raw folder in this process; returns the processed folder.

    The ``preprocess`` flow does the same with its parts spread over a task runner.
    """
    folder, parts = plan_parts(raw_dir, params, data_version, out)
    if not parts:
        return folder
    written = [write_part(folder, k, rows, params["data"]) for k, rows in enumerate(parts)]
    return finish_parts(folder, parts, written, params["data"]["image_size"])


def split_rows(processed: str, split: str) -> pd.DataFrame:
    """The rows of ``split.csv`` (path, label, patient_id, part, ...) that belong to one split, in
    the order of :func:`load_split` and :func:`load_contexts`. With ``data.balance`` the training
    split's stored images also hold each part's augmented copies (after that part's own images),
    which have no row: only val, test and the context images line up row for row."""
    table = pd.read_csv(Path(processed) / "split.csv")
    return table[table["split"] == split]


def _files(processed: str, split: str) -> list[Path]:
    found = (Path(processed) / "parts").glob(f"{split}-[0-9]*[0-9].npz")
    return sorted(found, key=lambda path: int(path.stem.rsplit("-", 1)[1]))  # part 100000 after 99999


def iter_labels(processed: str, split: str) -> Iterator[tuple[Path, np.ndarray]]:
    """Each part file of a split (or ``train_context``) with its labels, reading no pixels."""
    for path in _files(processed, split):
        with np.load(path) as arrays:
            yield path, arrays["y"]


def iter_parts(
    processed: str, split: str, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x, y)`` of each part of a split, one part in memory at a time, in ``order`` if given."""
    files = _files(processed, split)
    for index in order if order is not None else range(len(files)):
        with np.load(files[index]) as arrays:
            yield arrays["x"], arrays["y"]


def load_split(processed: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole ``x`` (uint8) and ``y`` of one split, for the consumers that need it at once
    (evaluation, the threshold's folds); training streams :func:`iter_parts` instead."""
    parts = list(iter_parts(processed, split))
    if not parts:
        size = json.loads((Path(processed) / "summary.json").read_text())["image_size"]
        return np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def load_contexts(processed: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The training split's context images and labels (written with ``data.augment.online``)."""
    contexts, labels = [], []
    for path in _files(processed, "train_context"):
        part, y = read_contexts(path)
        contexts.extend(part)
        labels.append(y)
    return contexts, np.concatenate(labels) if labels else np.zeros(0, np.int64)


def sample_split(processed: str, split: str, count: int, seed: int) -> np.ndarray:
    """A seeded sample of ``count`` images of a split (in split order), one part in memory at a time."""
    sizes = [len(y) for _, y in iter_labels(processed, split)]
    chosen = np.sort(np.random.default_rng(seed).permutation(sum(sizes))[:count])
    taken, start = [], 0
    for (x, _), size in zip(iter_parts(processed, split), sizes, strict=True):
        here = chosen[(chosen >= start) & (chosen < start + size)] - start
        taken.append(x[here])
        start += size
    return np.concatenate(taken)
