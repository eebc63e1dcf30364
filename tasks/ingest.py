"""Ingest: download raw images and labels from S3 into an immutable snapshot, version it with DVC.

A snapshot folder is named after its content (the S3 keys and ETags it mirrors), built aside and
moved into place in one rename, and never changed afterwards: two runs reading one data set each
read a complete folder, never one another run is rewriting. Its DVC version (the directory md5)
is recorded with the model, so any version's data can be restored later
(:func:`pneumo.versioning.restore_data`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import ClientError
from prefect import task

from pneumo.config import RAW_DATA, state_dir, workdir
from pneumo.datasets import SOURCES_FILE
from pneumo.orchestration import Progress
from pneumo.services import TRANSFER_TASK, until_reachable
from pneumo.storage import concurrently, list_objects, s3_client, split_sources, split_uri
from pneumo.versioning import version_folder


class SourceError(RuntimeError):
    """The S3 source cannot be read; the message says why."""


def dataset_name(source: str) -> str:
    """A folder name for an ``s3://bucket/prefix`` source."""
    bucket, prefix = split_uri(source)
    return "-".join([bucket, *filter(None, prefix.split("/"))])


def relative_keys(objects: list[dict], prefix: str) -> list[str]:
    """Each object's path below ``prefix``; refuses keys that would land outside the folder.

    Raises:
        SourceError: naming the keys with ``..``, ``.``, empty parts or an absolute path.
    """
    relative, bad = [], []
    for obj in objects:
        rest = obj["Key"][len(prefix) :].lstrip("/") if prefix else obj["Key"]
        parts = rest.split("/")
        if not rest or rest.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rest:
            bad.append(obj["Key"])
        relative.append(str(PurePosixPath(*parts)) if parts != [""] else "")
    if bad:
        shown = ", ".join(repr(k) for k in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SourceError(f"refusing {len(bad)} S3 keys that would land outside the data folder: {shown}")
    return relative


def _cache_path(etag: str, key: str) -> Path:
    digest = etag.strip('"').replace("-", "_") or key.replace("/", "_")
    return state_dir() / "cache" / "objects" / digest[:2] / digest


def _manifest_digest(entries: list[Entry]) -> str:
    lines = sorted(f"{e.key}\t{e.obj.get('ETag', '').strip(chr(34))}\t{e.obj['Size']}" for e in entries)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _list(source: str) -> list[dict]:
    client = s3_client()
    bucket, _ = split_uri(source)
    try:
        objects = [o for o in list_objects(client, source) if not o["Key"].endswith("/")]
    except client.exceptions.NoSuchBucket as error:
        raise SourceError(f"bucket {bucket!r} does not exist (source {source})") from error
    if not objects:
        raise SourceError(f"{source} is empty: push data first (pneumo data push DIR)")
    return objects


def _download(client: Any, bucket: str, obj: dict, cached: Path) -> None:
    """Fetch one object into the cache, only if it still has the ETag it was listed with.

    The cache is keyed by that ETag: an object overwritten between listing and download must not
    be cached under the old one (a snapshot's name would no longer match its content).
    """
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{uuid.uuid4().hex[:8]}.part")
    condition = {"IfMatch": obj["ETag"]} if obj.get("ETag") else {}
    try:
        body = client.get_object(Bucket=bucket, Key=obj["Key"], **condition)["Body"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
            raise
        raise SourceError(
            f"s3://{bucket}/{obj['Key']} changed while it was being ingested: run again"
        ) from error
    try:
        with partial.open("wb") as handle:
            for chunk in body.iter_chunks(1 << 20):
                handle.write(chunk)
        partial.rename(cached)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class Entry:
    """One object of the source and where it goes in the snapshot."""

    bucket: str
    obj: dict
    path: str  # relative to the snapshot folder
    key: str  # in the manifest: the S3 key (one source) or bucket/key (several)


def _plan(source: str) -> tuple[list[Entry], list[str]]:
    """Every object of every prefix of ``source``, and the snapshot's sub-folders (several prefixes).

    One prefix keeps its layout at the snapshot's top; several each get a sub-folder
    (``00-<dataset>``, ``01-<dataset>``, ...) named in :data:`pneumo.datasets.SOURCES_FILE`.
    """
    uris = split_sources(source)
    entries, folders = [], []
    for index, uri in enumerate(uris):
        bucket, prefix = split_uri(uri)
        objects = _list(uri)
        folder = f"{index:02d}-{dataset_name(uri)}" if len(uris) > 1 else ""
        folders += [folder] if folder else []
        for obj, rel in zip(objects, relative_keys(objects, prefix), strict=True):
            key = f"{bucket}/{obj['Key']}" if folder else obj["Key"]
            entries.append(Entry(bucket, obj, f"{folder}/{rel}" if folder else rel, key))
    return entries, folders


def _materialise(entries: list[Entry], folders: list[str], target: Path, progress: Progress) -> None:
    """Download (through the content-addressed cache, several objects at once) into a staging
    folder, then rename it to ``target``."""
    client = s3_client()
    staging = target.parent / f".incoming-{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        located = [(entry, _cache_path(entry.obj.get("ETag", ""), entry.key)) for entry in entries]
        missing = {}  # cache path -> entry: an object listed twice (same ETag) is fetched once
        for entry, cached in located:
            if not cached.exists():
                missing.setdefault(cached, entry)

        def fetch(item: tuple[Path, Entry]) -> None:
            _download(client, item[1].bucket, item[1].obj, item[0])

        cached_count = len(entries) - len(missing)
        for done, _ in enumerate(concurrently(fetch, missing.items()), 1):
            if done % 50 == 0 or done == len(missing):
                progress.update(cached_count + done, len(entries))
            if done % 1000 == 0 or done == len(missing):
                print(f"ingest: {done}/{len(missing)} objects downloaded ({cached_count} cached)")
        for entry, cached in located:
            local = staging / entry.path
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cached, local)
            except OSError:
                shutil.copyfile(cached, local)
        progress.update(len(entries), len(entries))
        print(f"ingest: {len(entries)} objects in the snapshot ({len(missing)} downloaded, rest cached)")
        with (staging / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["key", "etag", "size"])
            writer.writerows([e.key, e.obj.get("ETag", "").strip('"'), e.obj["Size"]] for e in entries)
        if folders:
            (staging / SOURCES_FILE).write_text("\n".join(folders) + "\n")
        try:
            staging.rename(target)
        except OSError:  # another run built the same snapshot first: same content, keep theirs
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@task(name="ingest", **TRANSFER_TASK)
@until_reachable("downloading the data set from S3")
def ingest(source: str, target: str | None = None) -> str:
    """Mirror ``source`` into an immutable snapshot ``data/raw/<dataset>-<content digest>``.

    ``source`` is one ``s3://`` prefix or several, comma-separated (for example a data set and the
    feedback prefix of confirmed images). Objects already in the cache (same ETag) are not
    downloaded again; a snapshot that exists is reused as it is. With ``target`` (the DVC stage)
    the folder is replaced instead. A ``manifest.csv`` lists each object's key, ETag and size.

    Returns:
        The local raw-data folder.

    Raises:
        SourceError: a bucket is missing or a prefix holds no objects, or a key would escape the folder.
    """
    try:
        entries, folders = _plan(source)
    except ValueError as error:
        raise SourceError(str(error)) from error
    progress = Progress(f"ingest: {len(entries)} objects of {source}")
    if target is not None:
        folder = Path(target)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        _materialise(entries, folders, folder, progress)
        return str(folder)
    name = "+".join(dataset_name(uri) for uri in split_sources(source))[:120]
    folder = workdir() / RAW_DATA / f"{name}-{_manifest_digest(entries)[:12]}"
    if (folder / "manifest.csv").exists():
        print(f"ingest: snapshot {folder.name} already complete ({len(entries)} objects)")
        progress.update(1, 1)
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(folder.parent)
    _materialise(entries, folders, folder, progress)
    return str(folder)


def _remove_abandoned(raw: Path, hours: float = 6) -> None:
    """Delete staging folders left by runs killed mid-ingest (no live run builds one this long)."""
    cutoff = time.time() - hours * 3600
    for staging in raw.glob(".incoming-*"):
        if staging.stat().st_mtime < cutoff:
            shutil.rmtree(staging, ignore_errors=True)


@task(name="version-data", **TRANSFER_TASK)
@until_reachable("pushing the data to the DVC remote")
def version_data(raw_dir: str) -> str:
    """``dvc add`` the raw snapshot (once: snapshots never change) and ``dvc push`` it.

    Returns:
        Its DVC version (the directory md5).
    """
    return version_folder(raw_dir)
