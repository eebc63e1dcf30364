"""pneumo.tasks.ingest: S3 keys that would escape the folder, and immutable snapshots versioned
with DVC on the real S3."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pneumo.config import Settings, workdir
from pneumo.storage import s3_client, upload_dir
from pneumo.synth import generate
from pneumo.tasks.ingest import SourceError, ingest, relative_keys, version_data
from pneumo.versioning import DVC


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


@pytest.mark.integration
def test_ingest_snapshots_are_immutable_and_dvc_push_pull_round_trips(stack: Settings, source: str):
    raw = Path(ingest.fn(source))
    assert raw.parent == workdir() / "data" / "raw" and raw.name.startswith("pneumo-raw-synthetic-test-")
    manifest = (raw / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 241  # header + 240 images + the CSV
    assert (raw / "Data_Entry_2017.csv").exists()
    assert ingest.fn(source) == str(raw)  # same content, same snapshot, not rewritten
    version = version_data.fn(str(raw))
    assert version.endswith(".dir")

    shutil.rmtree(raw)
    shutil.rmtree(workdir() / ".dvc" / "cache")
    subprocess.run([DVC, "pull", "-q", f"{raw.relative_to(workdir())}.dvc"], cwd=workdir(), check=True)
    assert len(list((raw / "images").glob("*.png"))) == 240
    assert version_data.fn(str(raw)) == version  # same content, same version


@pytest.mark.integration
def test_new_data_makes_a_new_snapshot_and_the_old_one_stays(stack: Settings, tmp_path: Path):
    folder = tmp_path / "growing"
    generate(folder, n=30, seed=1, size=48)
    uri = f"s3://{stack.raw_bucket}/growing"
    upload_dir(s3_client(stack), folder, uri)
    first = Path(ingest.fn(uri))
    before = sorted(p.name for p in first.rglob("*"))
    generate(tmp_path / "more", n=40, seed=2, size=48)
    upload_dir(s3_client(stack), tmp_path / "more", uri)
    second = Path(ingest.fn(uri))
    assert second != first and sorted(p.name for p in first.rglob("*")) == before


@pytest.mark.integration
def test_empty_source_is_a_clear_error(stack: Settings):
    with pytest.raises(SourceError, match="is empty"):
        ingest.fn(f"s3://{stack.raw_bucket}/nothing-here")
    with pytest.raises(SourceError, match="does not exist"):
        ingest.fn("s3://no-such-bucket/data")
