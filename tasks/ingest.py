"""Ingest: list and download raw images and labels from S3, then version them with DVC."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import task

from pneumo.config import Settings, state_dir, workdir
from pneumo.storage import list_objects, s3_client, split_uri

DVC = str(Path(sys.executable).parent / "dvc")


class SourceError(RuntimeError):
    """The S3 source cannot be read; the message says why."""


def dataset_name(source: str) -> str:
    """A folder name for an ``s3://bucket/prefix`` source."""
    bucket, prefix = split_uri(source)
    return "-".join([bucket, *filter(None, prefix.split("/"))])


def _cache_path(etag: str, key: str) -> Path:
    digest = etag.strip('"').replace("-", "_") or key.replace("/", "_")
    return state_dir() / "cache" / "objects" / digest[:2] / digest


@task(name="ingest", retries=3, retry_delay_seconds=5)
def ingest(source: str, target: str | None = None) -> str:
    """Mirror ``source`` into ``target`` (default ``data/raw/<dataset>``) through a content-addressed cache.

    Objects already in the cache (same ETag) are not downloaded again. A ``manifest.csv`` lists
    each object's key, ETag and size.

    Returns:
        The local raw-data folder.

    Raises:
        SourceError: the bucket is missing or unreachable, or holds no objects.
    """
    client = s3_client()
    bucket, _ = split_uri(source)
    try:
        objects = [o for o in list_objects(client, source) if not o["Key"].endswith("/")]
    except client.exceptions.NoSuchBucket as error:
        raise SourceError(f"bucket {bucket!r} does not exist (source {source})") from error
    except Exception as error:  # botocore raises many types for "cannot reach the endpoint"
        raise SourceError(f"cannot list {source} at {Settings.from_env().s3_endpoint}: {error}") from error
    if not objects:
        raise SourceError(f"{source} is empty: push data first (pneumo data push DIR)")

    _, prefix = split_uri(source)
    target = Path(target) if target else workdir() / "data" / "raw" / dataset_name(source)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    downloaded = 0
    for index, obj in enumerate(objects, 1):
        cached = _cache_path(obj.get("ETag", ""), obj["Key"])
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".part")
            client.download_file(bucket, obj["Key"], str(partial))
            partial.rename(cached)
            downloaded += 1
        local = target / obj["Key"][len(prefix) :].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cached, local)
        except OSError:
            shutil.copyfile(cached, local)
        if index % 200 == 0 or index == len(objects):
            print(f"ingest: {index}/{len(objects)} objects ({downloaded} downloaded, rest cached)")
    with (target / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "etag", "size"])
        writer.writerows([o["Key"], o.get("ETag", "").strip('"'), o["Size"]] for o in objects)
    return str(target)


def _dvc(*args: str, cwd: Path) -> str:
    result = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {(result.stderr + result.stdout).strip()}")
    return result.stdout


def ensure_dvc_repo(root: Path, settings: Settings) -> None:
    """Make ``root`` a DVC project whose default remote is the DVC bucket on our S3."""
    if not (root / ".dvc").is_dir():
        _dvc("init", *([] if (root / ".git").exists() else ["--no-scm"]), "-q", cwd=root)
    url = f"s3://{settings.dvc_bucket}/store"
    _dvc("remote", "add", "--local", "--force", "--default", "storage", url, cwd=root)
    _dvc("remote", "modify", "--local", "storage", "endpointurl", settings.s3_endpoint, cwd=root)


@task(name="version-data", retries=2, retry_delay_seconds=5)
def version_data(raw_dir: str) -> str:
    """``dvc add`` the raw folder and ``dvc push`` it; returns its DVC version (directory md5)."""
    root, folder = workdir(), Path(raw_dir)
    ensure_dvc_repo(root, Settings.from_env())
    relative = folder.relative_to(root).as_posix()
    _dvc("add", "-q", relative, cwd=root)
    _dvc("push", "-q", f"{relative}.dvc", cwd=root)
    outs = yaml.safe_load(Path(f"{folder}.dvc").read_text())["outs"][0]
    print(f"data version {outs['md5']} ({outs.get('nfiles', '?')} files) pushed to the DVC remote")
    return outs["md5"]
