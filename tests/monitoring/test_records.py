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


def test_a_table_an_older_release_created_gains_the_new_columns(tmp_path: Path):
    """A records database from before ``site`` existed: the service and monitoring still work on it."""
    from datetime import UTC, datetime

    from sqlalchemy import Column, MetaData, Table, create_engine, inspect

    from pneumo.monitoring.records import make_engine, predictions, read_records

    url = f"sqlite:///{tmp_path / 'old.db'}"
    before = MetaData()  # the predictions table as the previous release made it: no ``site``
    Table("predictions", before, *(Column(c.name, c.type, primary_key=c.primary_key)
                                   for c in predictions.columns if c.name != "site"))  # fmt: skip
    before.create_all(create_engine(url))
    old = {"request_id": "old", "created_at": datetime(2026, 11, 1, tzinfo=UTC), "model_name": "m",
           "model_version": "1", "probability": 0.2, "threshold": 0.5, "label": "NORMAL"}  # fmt: skip
    with create_engine(url).begin() as connection:
        connection.execute(before.tables["predictions"].insert(), [old])
    engine, again = make_engine(url), make_engine(url)  # the second finds the column there
    assert "site" in {c["name"] for c in inspect(again).get_columns("predictions")}
    row = {"request_id": "new", "created_at": datetime.now(UTC), "model_name": "m", "model_version": "1",
           "probability": 0.9, "threshold": 0.3, "site": "north", "label": "PNEUMONIA"}  # fmt: skip
    with engine.begin() as connection:
        connection.execute(predictions.insert(), [row])
    rows = {r["request_id"]: r for r in read_records(url)}
    assert rows["old"]["site"] is None and rows["new"]["site"] == "north"
