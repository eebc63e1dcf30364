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


def test_a_busy_window_is_sampled_uniformly_with_exact_counts(tmp_path: Path):
    from datetime import UTC, datetime, timedelta

    from pneumo.monitoring.records import add_feedback, make_engine, predictions, sample_window

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    now = datetime.now(UTC)
    rows = [
        {"request_id": f"r{i:04d}", "created_at": now - timedelta(minutes=i), "model_name": "m",
         "model_version": "1", "probability": 0.5, "threshold": 0.5,
         "label": "PNEUMONIA" if i % 4 == 0 else "NORMAL"}
        for i in range(2000)
    ]  # fmt: skip
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(predictions.insert(), rows)
    for i in range(0, 2000, 10):  # 200 confirmed diagnoses
        add_feedback(engine, f"r{i:04d}", "NORMAL")
    window = (now - timedelta(days=2), now + timedelta(seconds=1))
    sample = sample_window(url, *window, "m", "1", limit=300)
    assert (sample.records, sample.positives, sample.labelled) == (2000, 500, 200)  # over all records
    assert len(sample.rows) == 300 and len(sample.labelled_rows) == 200  # every labelled one fits
    assert all(row["confirmed_label"] == "NORMAL" for row in sample.labelled_rows)
    times = [row["created_at"] for row in sample.rows]
    assert times == sorted(times) and len({row["request_id"] for row in sample.rows}) == 300
    minutes = sorted((now - t).total_seconds() / 60 for t in times)
    assert minutes[0] < 50 and minutes[-1] > 1950 and 700 < minutes[150] < 1300  # spread over the window
    again = sample_window(url, *window, "m", "1", limit=300)
    assert [r["request_id"] for r in again.rows] == [r["request_id"] for r in sample.rows]  # seeded
    small = sample_window(url, *window, "m", "1", limit=5000)
    assert len(small.rows) == 2000  # a window under the limit is read whole
