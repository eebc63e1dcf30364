"""Fixtures. The integration stack runs on its own ports and state folder, never the user's.

Environment is set at import time, before Prefect or MLflow read their settings.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_STATE = Path(tempfile.mkdtemp(prefix="pneumo-test-state-"))
os.environ.update(
    {
        "PNEUMO_STATE_DIR": str(_STATE),
        "PNEUMO_WORKDIR": str(_STATE / "work"),
        "PNEUMO_S3_PORT": os.environ.get("PNEUMO_TEST_S3_PORT", "28333"),
        "PNEUMO_MLFLOW_PORT": os.environ.get("PNEUMO_TEST_MLFLOW_PORT", "25000"),
        "PNEUMO_PREFECT_PORT": os.environ.get("PNEUMO_TEST_PREFECT_PORT", "24200"),
        "PREFECT_HOME": str(_STATE / "prefect-client"),
    }
)
for _name in ("PNEUMO_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MLFLOW_S3_ENDPOINT_URL"):
    os.environ.pop(_name, None)

from pneumo.config import Settings, apply_client_env  # noqa: E402
from pneumo.synth import generate  # noqa: E402

SETTINGS = apply_client_env()


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real S3 + MLflow + Prefect stack, started once for the session and stopped after."""
    from pneumo import stack as stack_module

    (_STATE / "work").mkdir(parents=True, exist_ok=True)
    started = stack_module.up(SETTINGS)
    yield SETTINGS
    stack_module.down(SETTINGS, only=started)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic NIH-layout data set (deterministic)."""
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, n=240, seed=7, size=96)
    return out


@pytest.fixture(scope="session")
def source(stack: Settings, synthetic_dir: Path) -> str:
    """The synthetic set uploaded to the test stack's raw bucket."""
    from pneumo.storage import s3_client, upload_dir

    uri = f"s3://{stack.raw_bucket}/synthetic-test"
    assert upload_dir(s3_client(stack), synthetic_dir, uri) > 200
    return uri
