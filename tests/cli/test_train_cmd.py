"""pneumo train: what it refuses, and says, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from pneumo.config import Settings
from pneumo.storage import s3_client
from pneumo.synth import generate


def test_train_without_prefect_server_says_what_to_do(monkeypatch):
    from typer.testing import CliRunner

    from pneumo.cli import app

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    result = CliRunner().invoke(app, ["train", "--profile", "test"])
    assert result.exit_code == 2
    assert "pneumo stack up" in result.output


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nope"], "unknown profile 'nope'; known profiles: default, demo, fast, test, xray"),
        (["--set", "train.backbone=resnet"], "train.backbone must be one of densenet121, mobilenet_v3_small"),
        (["--set", "train.epoch=3"], "unknown parameter 'train.epoch'"),
        (["--set", "train.epochs=-1"], "train.epochs must be between 1 and 1000, not -1"),
    ],
)
def test_cli_refuses_bad_parameters_before_uploading(stack: Settings, tmp_path: Path, args, message):
    folder = tmp_path / "never-uploaded"
    generate(folder, n=12, seed=1, size=32, layout="folders")
    result = run_cli("train", "--data", str(folder), *args, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"error: {message}"), line
    assert not list(s3_client(stack).list_objects_v2(Bucket=stack.raw_bucket, Prefix="never-uploaded/")
                    .get("Contents", []))  # fmt: skip
