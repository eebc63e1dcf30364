"""pneumo.s3_identities: each deployed service's S3 identity can do what it needs and nothing else,
checked against a real SeaweedFS started with the document compose's S3 service writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from conftest import seaweed_port

from pneumo import s3_identities
from pneumo import stack as stack_module
from pneumo.config import Settings

ROLES = {role: (f"{role}-key", f'{role}-secret-with-"quote\\') for role in s3_identities.ROLES}


def test_the_compose_command_writes_valid_json_whatever_the_keys_hold(tmp_path: Path):
    env = {f"PNEUMO_S3_{r.upper()}_{part}": value for r, (key, secret) in ROLES.items()
           for part, value in (("ACCESS_KEY", key), ("SECRET_KEY", secret))}  # fmt: skip
    out = tmp_path / "s3.json"
    result = subprocess.run([sys.executable, "-m", "pneumo.s3_identities", str(out)], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    identities = {i["name"]: i for i in json.loads(out.read_text())["identities"]}
    assert identities["api"]["credentials"] == [{"accessKey": "api-key", "secretKey": ROLES["api"][1]}]
    assert out.stat().st_mode & 0o077 == 0
    missing = subprocess.run([sys.executable, "-m", "pneumo.s3_identities", str(out)], env={},
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "PNEUMO_S3_ADMIN_ACCESS_KEY" in missing.stderr


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS with one identity per role; the buckets made by the admin."""
    state = tmp_path_factory.mktemp("s3-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PNEUMO_STATE_DIR", str(state))
        patch.setenv("PNEUMO_S3_PORT", str(seaweed_port()))
        patch.delenv("PNEUMO_S3_ENDPOINT", raising=False)
        settings = Settings.from_env()
        service = next(s for s in stack_module.services(settings) if s.name == "s3")
        buckets = settings.bucket_names
        s3_identities.write(state / "s3" / "identities.json", ROLES, buckets)
        pid = stack_module._start(service)
        try:
            stack_module._wait_healthy(service, pid)
            client = _client(settings.s3_endpoint, "admin")
            for bucket in buckets.values():
                client.create_bucket(Bucket=bucket)
            yield settings.s3_endpoint, buckets
        finally:
            stack_module.terminate_group(pid)


def _client(endpoint: str, role: str):
    key, secret = ROLES[role]
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1")  # fmt: skip


def _can_put(endpoint: str, role: str, bucket: str, key: str) -> bool:
    try:
        _client(endpoint, role).put_object(Bucket=bucket, Key=key, Body=b"x")
        return True
    except botocore.exceptions.ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied", error.response
        return False


@pytest.mark.integration
def test_the_api_reads_models_and_writes_only_images_and_confirmations(seaweed):
    endpoint, b = seaweed
    assert _can_put(endpoint, "mlflow", b["mlflow"], "artifacts/1/model.onnx")
    assert (
        _client(endpoint, "api").get_object(Bucket=b["mlflow"], Key="artifacts/1/model.onnx")["Body"].read()
    )
    assert not _can_put(endpoint, "api", b["mlflow"], "artifacts/1/model.onnx")  # never a model
    assert _can_put(endpoint, "api", b["raw"], f"{s3_identities.PREDICTION_IMAGES}/2026/11/28/r1")
    assert _can_put(endpoint, "api", b["raw"], f"{s3_identities.FEEDBACK}/PNEUMONIA/r1.png")
    assert not _can_put(endpoint, "api", b["raw"], "synthetic/images/x.png")  # not the training data
    assert not _can_put(endpoint, "api", b["dvc"], "files/md5/x")
    assert not _can_put(endpoint, "api", b["reports"], "drift/x.html")


@pytest.mark.integration
def test_the_worker_and_mlflow_keep_to_their_buckets(seaweed):
    endpoint, b = seaweed
    assert _can_put(endpoint, "worker", b["dvc"], "files/md5/x")
    assert _can_put(endpoint, "worker", b["reports"], "drift/x.html")
    assert not _can_put(endpoint, "worker", b["mlflow"], "artifacts/1/model.onnx")
    assert not _can_put(endpoint, "worker", b["raw"], "synthetic/images/x.png")
    assert not _can_put(endpoint, "mlflow", b["raw"], "synthetic/images/x.png")
    assert _can_put(endpoint, "admin", b["raw"], "synthetic/images/x.png")
