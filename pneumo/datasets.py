"""Labelled image sets in the layouts users have: NIH ChestX-ray14 and class folders.

Both become one table with the columns ``path`` (absolute), ``label`` (1 = pneumonia),
``patient_id`` and ``finding`` (the original label text).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pneumo.synth import NIH_CSV

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
NIH_REQUIRED = ["Image Index", "Finding Labels", "Patient ID"]
POSITIVE_DIRS = {"pneumonia"}
NEGATIVE_DIRS = {"normal", "no finding", "no_finding"}
SOURCES_FILE = "sources.txt"  # in a snapshot of several S3 prefixes: one sub-folder per line
# Kermany et al. file names carry the patient: person123_bacteria_456, IM-0117-0001, NORMAL2-IM-0117-0001.
_PATIENT_PATTERNS = [re.compile(r"^(person\d+)_"), re.compile(r"^((?:NORMAL2-)?IM-\d+)-")]


class DataError(ValueError):
    """The data cannot be used as it is; the message says why."""


def patient_from_filename(name: str) -> str:
    """Best patient id from a file name; the stem when no known pattern matches."""
    stem = Path(name).stem
    for pattern in _PATIENT_PATTERNS:
        if match := pattern.match(stem):
            return match.group(1)
    return stem


def _find_nih_csv(root: Path) -> Path | None:
    matches = sorted(root.rglob(NIH_CSV))
    return matches[0] if matches else None


def read_nih(csv_path: Path, positive: str, negative: str) -> pd.DataFrame:
    """Rows of an NIH ``Data_Entry_2017.csv`` whose images exist, labelled 1/0.

    Keeps images whose findings include ``positive`` and those whose finding is exactly
    ``negative``; other findings are dropped.
    """
    try:
        table = pd.read_csv(csv_path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{csv_path.name} is not a readable CSV: {error}") from error
    missing = [c for c in NIH_REQUIRED if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path.name} lacks the column(s) {missing}; it has {list(table.columns)}")
    images = {p.name: p for p in csv_path.parent.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    findings = table["Finding Labels"].fillna("").str.split("|")
    is_positive = findings.apply(lambda labels: positive in labels)
    is_negative = table["Finding Labels"].fillna("") == negative
    kept = table[is_positive | is_negative]
    rows = pd.DataFrame(
        {
            "path": kept["Image Index"].map(lambda n: str(images[n]) if n in images else None),
            "label": is_positive[kept.index].astype(int),
            "patient_id": kept["Patient ID"].astype(str),
            "finding": kept["Finding Labels"],
        }
    )
    return rows.dropna(subset=["path"]).reset_index(drop=True)


def read_class_folders(root: Path) -> pd.DataFrame:
    """Images below ``NORMAL/`` and ``PNEUMONIA/`` folders (any depth, any case)."""
    rows = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        folder = path.parent.name.lower()
        if folder in POSITIVE_DIRS or folder in NEGATIVE_DIRS:
            rows.append(
                {
                    "path": str(path),
                    "label": int(folder in POSITIVE_DIRS),
                    "patient_id": patient_from_filename(path.name),
                    "finding": path.parent.name,
                }
            )
    return pd.DataFrame(rows, columns=["path", "label", "patient_id", "finding"])


def _read_one(root: Path, positive: str, negative: str) -> pd.DataFrame:
    csv_path = _find_nih_csv(root)
    table = read_nih(csv_path, positive, negative) if csv_path else read_class_folders(root)
    layout = f"NIH ({csv_path.name})" if csv_path else "class folders (NORMAL/, PNEUMONIA/)"
    if table.empty:
        raise DataError(
            f"no labelled images found in {root} as {layout}; expected {NIH_CSV} with image files "
            "or NORMAL/ and PNEUMONIA/ folders of .png/.jpg/.dcm images"
        )
    return table


def read_labelled(root: Path, positive: str = "Pneumonia", negative: str = "No Finding"):
    """The labelled table of a folder in either layout, or of a snapshot of several sources (a
    :data:`SOURCES_FILE` naming one sub-folder per source, each in its own layout).

    Raises:
        DataError: no known layout, or no usable images of both classes.
    """
    listed = root / SOURCES_FILE
    if listed.exists():
        parts = [_read_one(root / line.strip(), positive, negative)
                 for line in listed.read_text().splitlines() if line.strip()]  # fmt: skip
        table = pd.concat(parts, ignore_index=True)
    else:
        table = _read_one(root, positive, negative)
    counts = table["label"].value_counts()
    if len(counts) < 2:
        raise DataError(f"{root} has images of one class only ({dict(counts)}); need both")
    return table
