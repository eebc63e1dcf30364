"""pneumo.assessment: pneumo evaluate's checks that need no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.assessment import prepare_table
from pneumo.datasets import DataError, read_labelled
from pneumo.synth import generate


def test_evaluation_refuses_a_folder_without_readable_images_of_both_classes(tmp_path: Path):
    generate(tmp_path, n=12, seed=3, size=32, layout="folders")
    for path in (tmp_path / "PNEUMONIA").glob("*.png"):
        path.write_bytes(b"not a png")
    table = read_labelled(tmp_path)
    with pytest.raises(DataError, match="unreadable"):
        prepare_table(table, 32, "crop")
