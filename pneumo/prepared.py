"""Prepared images of raw files: cached by content, made on every core.

Decoding a full-resolution film costs 20-40 ms, and a retraining after 10% more images should
decode only those. Each file's prepared image (and, for online augmentation, its context image) is
kept in ``state_dir()/cache/prepared/<recipe key>/<sha256 of the file>.npy``. The recipe key names
everything the pixels depend on (:data:`PREPARATION`, the kind, the size, the square mode and, for
a context, its side and squeeze), so changing any of them starts a fresh folder; the content hash makes
a renamed or re-ingested file a hit and a changed one a miss.

The work runs on a thread pool as large as the machine: PIL releases the GIL while it decodes and
resizes, and hashlib while it hashes, so threads keep every core busy without copying images
between processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.augment import context
from pneumo.config import cores, state_dir
from pneumo.images import ImageError, check_proportions, decode, prepare

# Bump when pneumo.images.prepare or pneumo.augment.context change the pixels they produce.
PREPARATION = 1


def cache_folder(settings: dict[str, object]) -> Path:
    """The cache folder of one way of preparing images (``settings`` names it completely)."""
    key = json.dumps({"preparation": PREPARATION, **settings}, sort_keys=True).encode()
    return state_dir() / "cache" / "prepared" / hashlib.sha256(key).hexdigest()[:16]


def _cached(path: str, folder: Path, make: Callable[[Image.Image], np.ndarray]) -> tuple[np.ndarray, bool]:
    """``make(decoded file)``, from the cache when this content was prepared before.

    Returns:
        The array and whether it was made now (a cache miss).
    """
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    entry = folder / digest[:2] / f"{digest}.npy"
    try:
        return np.load(entry), False
    except (OSError, ValueError):  # absent, or cut short by a killed run: make it again
        pass
    array = make(decode(data))
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = entry.with_name(f"{entry.stem}.{uuid.uuid4().hex[:8]}.part.npy")
    np.save(partial, array)
    os.replace(partial, entry)  # whole or not at all
    return array, True


def _prepare_all(
    paths: Sequence[str], folder: Path, make: Callable[[Image.Image], np.ndarray], what: str
) -> list[np.ndarray | None]:
    """Each file's array (None where unreadable, said once per file); progress every 1,000 files."""

    def one(path: str) -> tuple[np.ndarray | None, bool]:
        try:
            return _cached(path, folder, make)
        except (ImageError, OSError) as error:
            print(f"skipping unreadable image {Path(path).name}: {error}")
            return None, False

    arrays, made = [], 0
    with ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="prepare") as pool:
        for position, (array, new) in enumerate(pool.map(one, paths), 1):
            arrays.append(array)
            made += new
            if position % 1000 == 0 or position == len(paths):
                print(f"{what}: {position}/{len(paths)} images ({made} decoded, the rest cached)")
    return arrays


def prepared_images(paths: Sequence[str], size: int, square: str) -> tuple[np.ndarray, list[int]]:
    """Decode and prepare image files as the service does, skipping (and naming) unreadable ones,
    and images the service would refuse for their proportions.

    Returns:
        The prepared ``uint8`` images ``(N, size, size)`` of the readable files and the positions
        of the unreadable ones.
    """

    def make(image: Image.Image) -> np.ndarray:
        check_proportions(image.size)  # what the service refuses, training and evaluation skip
        return prepare(image, size, square)

    folder = cache_folder({"kind": "prepared", "size": size, "square": square})
    arrays = _prepare_all([str(p) for p in paths], folder, make, "prepare")
    unreadable = [position for position, array in enumerate(arrays) if array is None]
    kept = [array for array in arrays if array is not None]
    return (np.stack(kept) if kept else np.zeros((0, size, size), np.uint8)), unreadable


def context_images(
    paths: Sequence[str], side: int, squeeze: float, square_mode: str = "crop"
) -> list[np.ndarray]:
    """The context images (:func:`pneumo.augment.context`) of readable image files, cached likewise.

    Raises:
        ImageError: a file cannot be read (callers pass files :func:`prepared_images` read).
    """
    folder = cache_folder({"kind": "context", "side": side, "squeeze": squeeze, "square": square_mode})
    arrays = _prepare_all(
        [str(p) for p in paths], folder, lambda image: context(image, side, squeeze, square_mode), "context"
    )
    if any(array is None for array in arrays):
        raise ImageError("an image became unreadable between two reads: run again")
    return [array for array in arrays if array is not None]
