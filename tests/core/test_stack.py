"""pneumo.stack: the local S3 + MLflow + Prefect stack."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


@pytest.mark.integration
def test_one_setting_moves_mlflow_prefect_and_the_records_to_postgres():
    """``PNEUMO_DB=postgres pneumo stack up`` once: a local PostgreSQL server holds MLflow's,
    Prefect's and the records' tables, later commands need not repeat the setting, and no password
    is on a command line."""
    import psycopg2
    from conftest import CLI, free_port, seaweed_port

    tmp_path = Path(tempfile.mkdtemp(prefix="pneumo-stack-"))  # not under pytest's folders (mode 700):
    tmp_path.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    ports = {
        "S3": str(seaweed_port()),
        **{name: str(free_port()) for name in ("MLFLOW", "PREFECT", "POSTGRES")},
    }
    env = {**os.environ, "PNEUMO_STATE_DIR": str(tmp_path), "COLUMNS": "250",
           **{f"PNEUMO_{name}_PORT": port for name, port in ports.items()}}  # fmt: skip
    for name in ("PNEUMO_DB", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PNEUMO_S3_ENDPOINT",
                 "PNEUMO_RECORDS_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):  # fmt: skip
        env.pop(name, None)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env={**env, **extra}, capture_output=True, text=True, timeout=300)

    up = cli("stack", "up", PNEUMO_DB="postgres")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = cli("stack", "status")  # no PNEUMO_DB: the choice was kept
        assert re.search(r"^postgres\s+healthy", status.stdout, re.MULTILINE), status.stdout
        password = (tmp_path / "postgres" / "password").read_text().strip()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                assert password.encode() not in cmdline.read_bytes(), cmdline
        mlflow = f"http://127.0.0.1:{ports['MLFLOW']}/api/2.0/mlflow/registered-models/create"
        assert requests.post(mlflow, json={"name": "on-postgres"}, timeout=30).ok

        def query(database: str, sql: str) -> list:
            url = f"postgresql://pneumo:{password}@127.0.0.1:{ports['POSTGRES']}/{database}"
            with psycopg2.connect(url) as connection, connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()

        assert query("mlflow", "SELECT name FROM registered_models") == [("on-postgres",)]
        assert query(
            "prefect", "SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow'"
        ) == [(1,)]
        read = "from pneumo.config import Settings; print(Settings.from_env().records_url)"
        settings = subprocess.run(
            [sys.executable, "-c", read], env=env, capture_output=True, text=True
        ).stdout
        assert settings.startswith("postgresql+psycopg2://pneumo:") and settings.strip().endswith(
            "/predictions"
        )
    finally:
        down = cli("stack", "down")
    assert down.returncode == 0 and "postgres stopped" in down.stdout, down.stdout + down.stderr
    assert not re.search(r"healthy", cli("stack", "status").stdout)
    shutil.rmtree(tmp_path, ignore_errors=True)
