"""pneumo.prepared: prepared images cached by content, so a grown data set decodes only what is new."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pneumo.prepared as prepared
from pneumo.images import decode, prepare
from pneumo.prepared import cache_folder, context_images, prepared_images


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """Counts the files decoded; the cache lives in this test's state folder."""
    monkeypatch.setenv("PNEUMO_STATE_DIR", str(tmp_path / "state"))
    calls: list[int] = []

    def counting(data: bytes, *args, **kwargs):
        calls.append(len(data))
        return decode(data, *args, **kwargs)

    monkeypatch.setattr(prepared, "decode", counting)
    return calls


def _films(folder: Path, values: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for value in values:
        path = folder / f"film{value}.png"
        Image.new("L", (80, 60), value).save(path)
        paths.append(path)
    return paths


def test_a_grown_data_set_decodes_only_the_new_files(decodes: list[int], tmp_path: Path):
    paths = _films(tmp_path / "raw", [10, 20, 30])
    first, unreadable = prepared_images(paths, 32, "crop")
    assert unreadable == [] and first.shape == (3, 32, 32) and len(decodes) == 3
    grown = paths + _films(tmp_path / "raw", [40])
    again, _ = prepared_images(grown, 32, "crop")
    assert len(decodes) == 4  # only the new film
    assert np.array_equal(again[:3], first)
    assert np.array_equal(again[3], prepare(Image.open(grown[3]), 32, "crop"))  # as the service prepares it
    renamed = tmp_path / "elsewhere" / "same-content.png"
    renamed.parent.mkdir()
    renamed.write_bytes(paths[0].read_bytes())
    prepared_images([renamed], 32, "crop")
    assert len(decodes) == 4  # same content under another name: a hit


def test_changed_content_or_recipe_is_a_miss_and_a_cut_short_entry_is_made_again(
    decodes: list[int], tmp_path: Path
):
    (path,) = _films(tmp_path / "raw", [10])
    prepared_images([path], 32, "crop")
    Image.new("L", (80, 60), 200).save(path)  # overwritten in place
    assert prepared_images([path], 32, "crop")[0].mean() == 200 and len(decodes) == 2
    prepared_images([path], 48, "crop")  # another size: another cache folder
    assert len(decodes) == 3
    assert cache_folder({"kind": "prepared", "size": 48, "square": "crop"}) != cache_folder(
        {"kind": "prepared", "size": 32, "square": "crop"}
    )
    for entry in cache_folder({"kind": "prepared", "size": 48, "square": "crop"}).rglob("*.npy"):
        entry.write_bytes(entry.read_bytes()[:20])  # a run killed while writing
    assert prepared_images([path], 48, "crop")[0].shape == (1, 48, 48) and len(decodes) == 4


def test_unreadable_files_are_skipped_and_named_and_contexts_are_cached_too(
    decodes: list[int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    paths = _films(tmp_path / "raw", [10, 20])
    broken = tmp_path / "raw" / "broken.png"
    broken.write_bytes(b"not an image")
    images, unreadable = prepared_images([paths[0], broken, paths[1]], 32, "crop")
    assert unreadable == [1] and images.shape == (2, 32, 32)
    assert "skipping unreadable image broken.png" in capsys.readouterr().out
    contexts = context_images(paths, 40, 1.6)
    assert [c.shape for c in contexts] == [(40, 53), (40, 53)]
    calls = len(decodes)
    assert all(np.array_equal(a, b) for a, b in zip(context_images(paths, 40, 1.6), contexts, strict=True))
    assert len(decodes) == calls
