"""SeaweedFS's S3 identities: who may do what in which bucket.

The local stack has one identity with every right. A deployment (compose.yaml) gives each service
its own, with only the rights it needs:

- ``admin``: everything (operators: uploads of raw data, bucket creation);
- ``mlflow``: the MLflow bucket (the tracking server proxies every artifact);
- ``worker``: reads the raw data, keeps DVC's cache and writes the drift reports;
- ``api``: reads models (when artifacts are in S3 rather than proxied) and the reports, and writes
  prediction images and confirmed images under their prefixes of the raw bucket, nothing else.

``python -m pneumo.s3_identities FILE`` writes the document for compose's S3 service from its
environment (``PNEUMO_S3_<ROLE>_ACCESS_KEY`` and ``..._SECRET_KEY``): JSON built by a JSON library,
so no key can break it, and a file only its owner reads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pneumo.config import Settings

ROLES = ("admin", "mlflow", "worker", "api")
ALL_RIGHTS = ["Admin", "Read", "Write", "List", "Tagging"]
PREDICTION_IMAGES = "prediction-images"  # the raw bucket's prefix for PNEUMO_STORE_IMAGES_URI
FEEDBACK = "feedback"  # the raw bucket's prefix for confirmed images (PNEUMO_FEEDBACK_URI)


def actions(role: str, buckets: dict[str, str]) -> list[str]:
    """SeaweedFS actions of ``role``; ``buckets`` maps raw, mlflow, dvc and reports to their names."""
    raw, mlflow, dvc, reports = (buckets[kind] for kind in ("raw", "mlflow", "dvc", "reports"))
    return {
        "admin": ALL_RIGHTS,
        "mlflow": [f"{right}:{mlflow}" for right in ("Read", "Write", "List", "Tagging")],
        "worker": [
            f"Read:{raw}",
            f"List:{raw}",
            *(f"{right}:{bucket}" for bucket in (dvc, reports) for right in ("Read", "Write", "List")),
        ],
        "api": [
            f"Read:{mlflow}",
            f"Read:{reports}",
            f"List:{reports}",
            f"Read:{raw}",
            f"Write:{raw}/{PREDICTION_IMAGES}/*",
            f"Write:{raw}/{FEEDBACK}/*",
        ],
    }[role]


def document(credentials: dict[str, tuple[str, str]], buckets: dict[str, str]) -> dict:
    """The identities document for ``credentials`` (role -> access key, secret key)."""
    return {
        "identities": [
            {"name": role, "credentials": [{"accessKey": key, "secretKey": secret}],
             "actions": actions(role, buckets)}
            for role, (key, secret) in credentials.items()
        ]
    }  # fmt: skip


def write(path: Path, credentials: dict[str, tuple[str, str]], buckets: dict[str, str]) -> None:
    """Write the document, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document(credentials, buckets), handle)


def credentials_from_env() -> dict[str, tuple[str, str]]:
    """Every role whose ``PNEUMO_S3_<ROLE>_ACCESS_KEY`` and ``..._SECRET_KEY`` are set."""
    found = {}
    for role in ROLES:
        key = os.environ.get(f"PNEUMO_S3_{role.upper()}_ACCESS_KEY", "")
        secret = os.environ.get(f"PNEUMO_S3_{role.upper()}_SECRET_KEY", "")
        if key and secret:
            found[role] = (key, secret)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pneumo.s3_identities FILE", file=sys.stderr)
        return 2
    credentials = credentials_from_env()
    if "admin" not in credentials:
        print("PNEUMO_S3_ADMIN_ACCESS_KEY and PNEUMO_S3_ADMIN_SECRET_KEY must be set", file=sys.stderr)
        return 2
    write(Path(argv[0]), credentials, Settings.from_env().bucket_names)
    print(f"S3 identities: {', '.join(credentials)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
