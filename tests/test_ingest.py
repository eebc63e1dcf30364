"""Ingest's checks that need no server: S3 keys that would escape the data folder."""

from __future__ import annotations

import pytest

from tasks.ingest import SourceError, relative_keys


def _objects(*keys: str) -> list[dict]:
    return [{"Key": key, "Size": 1} for key in keys]


def test_keys_below_the_prefix_become_relative_paths():
    keys = relative_keys(_objects("data/set/NORMAL/a.png", "data/set/labels.csv"), "data/set")
    assert keys == ["NORMAL/a.png", "labels.csv"]


@pytest.mark.parametrize(
    "bad", ["data/set/../../etc/passwd", "data/set/a/../../b.png", "data/set/a//x.png", "data/set/./x.png"]
)
def test_keys_that_escape_the_folder_are_refused_and_named(bad: str):
    with pytest.raises(SourceError, match="refusing 1 S3 keys") as error:
        relative_keys(_objects("data/set/ok.png", bad), "data/set")
    assert repr(bad) in str(error.value)
