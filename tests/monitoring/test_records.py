"""pneumo.monitoring.records: the production records, read per model version and window."""

from __future__ import annotations

from pathlib import Path


def test_records_are_read_per_model_version_and_window(tmp_path: Path):
    from datetime import UTC, datetime, timedelta

    from pneumo.monitoring.records import make_engine, predictions, read_records

    url = f"sqlite:///{tmp_path / 'records.db'}"
    now = datetime.now(UTC)
    rows = [
        {"request_id": f"r{i}", "created_at": now - timedelta(hours=i), "model_name": "m",
         "model_version": str(1 + i % 2), "probability": 0.5, "threshold": 0.5, "label": "NORMAL"}
        for i in range(6)
    ]  # fmt: skip
    with make_engine(url).begin() as connection:
        connection.execute(predictions.insert(), rows)
    picked = read_records(url, now - timedelta(hours=4.5), now + timedelta(seconds=1), "m", "1")
    assert [r["request_id"] for r in picked] == ["r4", "r2", "r0"]  # oldest first, version 1 only
    assert all(r["created_at"].tzinfo is not None for r in picked)
    assert read_records(url, model_name="other") == []
