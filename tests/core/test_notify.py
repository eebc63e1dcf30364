"""pneumo.notify: operators are told. A run that fails on purpose and a promotion reach the real
service, under gunicorn, through the real Prefect server's automations and webhook."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import running_service

from pneumo.config import Settings
from pneumo.flows.training_flow import training
from pneumo.notify import ensure_operator_events
from pneumo.tasks.ingest import SourceError

pytestmark = pytest.mark.integration
MODEL = "pneumonia-events-test"
TOKEN = "events-secret"


@pytest.fixture
def service(stack: Settings, tmp_path: Path) -> Iterator[str]:
    """The prediction service as deployed (gunicorn), with an admin token, on a free port."""
    env = {"PNEUMO_ADMIN_TOKEN": TOKEN, "PNEUMO_MODEL_NAME": MODEL,
           "PNEUMO_RECORDS_URL": f"sqlite:///{tmp_path / 'records.db'}"}  # fmt: skip
    with running_service(env) as url:
        yield url


def _events(url: str, wanted: dict[str, str], timeout: float = 120) -> list[dict]:
    """Poll /reports until an event of each wanted kind (event -> name prefix) has arrived."""
    deadline = time.monotonic() + timeout
    while True:
        events = requests.get(f"{url}/reports?format=json", timeout=10).json()["events"]
        if all(any(e["event"] == kind and (e["name"] or "").startswith(prefix) for e in events)
               for kind, prefix in wanted.items()):  # fmt: skip
            return events
        assert time.monotonic() < deadline, f"operator events did not arrive: {events}"
        time.sleep(0.5)


def test_a_failed_run_and_a_promotion_reach_the_operator(service: str, source: str):
    ensure_operator_events(f"{service}/admin/events", TOKEN)
    overrides = {"registry": {"model_name": MODEL}}
    summary = training(source=source, profile="test", overrides=overrides)  # the promotion comes last
    assert summary["promoted"], summary["reasons"]
    with pytest.raises(SourceError):  # made to fail: a bucket that does not exist
        training(source="s3://no-such-bucket/clinic", profile="test", overrides=overrides)

    events = _events(service, {"prefect.flow-run.Failed": "train test on no-such-bucket/clinic",
                               "pneumo.model.promoted": f"{MODEL} v{summary['version']}"})  # fmt: skip
    assert all(set(event) == {"id", "event", "name", "message", "received_at"} for event in events)
    page = requests.get(f"{service}/reports", timeout=10).text
    assert "Operator events" in page and "prefect.flow-run.Failed" in page
    assert requests.post(f"{service}/admin/events", json={"event": "x"}, timeout=5).status_code == 401
