"""pneumo.stack: the local S3 + MLflow + Prefect stack."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import requests

from pneumo import stack as stack_module
from pneumo.config import Settings
from pneumo.storage import s3_client


def test_stack_never_claims_a_process_it_did_not_start(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PNEUMO_STATE_DIR", str(tmp_path))
    for service in stack_module.services(Settings.from_env()):
        service.pid_file.parent.mkdir(parents=True, exist_ok=True)
        service.pid_file.write_text(json.dumps({"pid": os.getpid()}))  # a reused pid: this test
    assert all(row["pid"] is None for row in stack_module.status(Settings.from_env()))
    stack_module.down(Settings.from_env(), echo=lambda _: None)  # must not signal this process
    assert not any(s.pid_file.exists() for s in stack_module.services(Settings.from_env()))


@pytest.mark.integration
def test_stack_is_healthy_and_second_up_is_harmless(stack: Settings):
    assert all(row["healthy"] and row["pid"] for row in stack_module.status(stack))
    assert stack_module.up(stack, echo=lambda _: None) == []  # nothing started twice
    response = requests.get(f"{stack.prefect_api_url}/health", timeout=5)
    assert response.status_code == 200


@pytest.mark.integration
def test_s3_round_trip(stack: Settings):
    client = s3_client(stack)
    key = f"roundtrip/{uuid.uuid4().hex}.bin"
    payload = uuid.uuid4().bytes * 1000
    client.put_object(Bucket=stack.raw_bucket, Key=key, Body=payload)
    assert client.get_object(Bucket=stack.raw_bucket, Key=key)["Body"].read() == payload
