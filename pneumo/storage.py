"""S3 helpers (boto3) shared by the CLI, the stack and the tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from pneumo.config import Settings


def s3_client(settings: Settings | None = None) -> BaseClient:
    """A boto3 S3 client for the configured endpoint, with retries on transient errors."""
    settings = settings or Settings.from_env()
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"},
        ),
    )


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def split_sources(source: str) -> list[str]:
    """A training source is one ``s3://`` prefix or several, comma-separated (``s3://a/x,s3://b/y``).

    Raises:
        ValueError: an entry is not an ``s3://bucket[/prefix]`` URI.
    """
    uris = [part.strip().rstrip("/") for part in source.split(",") if part.strip()]
    for uri in uris:
        split_uri(uri)
    if not uris:
        raise ValueError(f"no s3:// URI in the source {source!r}")
    return uris


def join_sources(uris: list[str]) -> str:
    """The source string of several prefixes, each once, in order."""
    return ",".join(dict.fromkeys(uris))


def list_objects(client: BaseClient, uri: str) -> Iterator[dict]:
    """Every object under an ``s3://bucket/prefix`` URI (paginated)."""
    bucket, prefix = split_uri(uri)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        yield from page.get("Contents", [])


def upload_dir(client: BaseClient, local: Path, uri: str) -> int:
    """Upload every file below ``local`` to ``uri``, keeping relative paths; returns the count."""
    bucket, prefix = split_uri(uri)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        key = "/".join(filter(None, [prefix, path.relative_to(local).as_posix()]))
        client.upload_file(str(path), bucket, key)
    return len(files)


def sync_dir(client: BaseClient, local: Path, uri: str) -> tuple[int, int]:
    """Make ``uri`` hold exactly the files below ``local``: upload them, delete any other object.

    A data set pushed again after files were removed from the folder must not keep the old files
    in S3, where the next training would ingest them. Returns (uploaded, removed).
    """
    bucket, prefix = split_uri(uri)
    uploaded = upload_dir(client, local, uri)
    wanted = {"/".join(filter(None, [prefix, p.relative_to(local).as_posix()])) for p in local.rglob("*")
              if p.is_file()}  # fmt: skip
    stale = [obj["Key"] for obj in list_objects(client, uri) if obj["Key"] not in wanted]
    for start in range(0, len(stale), 1000):
        batch = [{"Key": key} for key in stale[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    return uploaded, len(stale)
