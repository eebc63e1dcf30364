"""The records schema under Alembic: a new database is made by the migrations exactly as the code
declares it, and a database of any older release is upgraded on start without losing a row; on
SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from pneumo.monitoring import records
from pneumo.monitoring.records import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    make_engine,
    metadata,
    predictions,
    read_records,
)

OLD_ROW = {"request_id": "old", "created_at": datetime(2026, 11, 1, tzinfo=UTC), "model_name": "m",
           "model_version": "1", "probability": 0.2, "threshold": 0.5, "label": "NORMAL"}  # fmt: skip


def head() -> str:
    config = alembic_config()
    return ScriptDirectory.from_config(config).get_current_head()


def schema_differences(url: str) -> list:
    """What differs between the database and the tables the code declares (Alembic's autogenerate;
    its own version table aside)."""
    with create_engine(url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    return [d for d in differences if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]


def database_of_release(url: str, revision: str) -> None:
    """A database shaped as the release at ``revision`` made it, before the records had migrations:
    the tables of that revision, no version table, one prediction."""
    config = alembic_config()
    with create_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        insert = (
            "INSERT INTO predictions (request_id, created_at, model_name, model_version, probability, "
            "threshold, label) VALUES (:request_id, :created_at, :model_name, :model_version, "
            ":probability, :threshold, :label)"
        )
        connection.execute(text(insert), OLD_ROW)


def fresh(url: str) -> None:
    records._UPGRADED.discard(url)  # as a new process would


_NAMES = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a new database on a PostgreSQL server of the tests' own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    server = request.getfixturevalue("postgres_server")
    name = f"migration_{next(_NAMES)}"
    server.create_databases((name,))
    return server.url(name)


def test_a_new_database_is_made_by_the_migrations_exactly_as_the_code_declares(url: str):
    make_engine(url)
    assert schema_differences(url) == []
    with create_engine(url).connect() as connection:
        assert current_revision(connection) == head()


@pytest.mark.parametrize("release", ["0001", "0002", "0004", "0005"])
def test_a_database_of_an_older_release_is_upgraded_without_losing_a_row(url: str, release: str):
    database_of_release(url, release)
    fresh(url)
    engine = make_engine(url)
    assert schema_differences(url) == []
    new = {**OLD_ROW, "request_id": "new", "site": "north", "emb_0": 0.5, "created_at": datetime.now(UTC)}
    with engine.begin() as connection:
        connection.execute(predictions.insert(), [new])
    rows = {row["request_id"]: row for row in read_records(url)}
    assert rows["old"]["probability"] == pytest.approx(0.2) and rows["old"]["site"] is None
    assert rows["new"]["site"] == "north" and rows["new"]["emb_0"] == pytest.approx(0.5)
    assert {"feedback", "operator_events"} <= set(inspect(engine).get_table_names())


def _upgrade_in_a_new_process(url: str) -> str:
    return records.upgrade(create_engine(url))


def test_processes_that_upgrade_at_once_all_succeed(url: str):
    """Gunicorn's workers and the monitoring flow start together against one database."""
    database_of_release(url, "0001")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        revisions = pool.map(_upgrade_in_a_new_process, [url] * 4)
    assert revisions == [head()] * 4
    assert schema_differences(url) == []
    assert [row["request_id"] for row in read_records(url)] == ["old"]


def test_the_service_upgrades_an_older_database_when_it_starts(tmp_path: Path):
    """Before its first prediction: gunicorn's workers start, then wait for a request."""
    import time

    from pneumo.serving import create_app

    url = f"sqlite:///{tmp_path / 'records.db'}"
    database_of_release(url, "0001")
    fresh(url)
    app = create_app({"MODEL_NAME": "no-model-needed", "RELOAD_INTERVAL_S": 0, "RECORDS_URL": url})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with create_engine(url).connect() as connection:
                if current_revision(connection) == head():
                    break
            time.sleep(0.2)
        assert schema_differences(url) == []
        assert [row["request_id"] for row in read_records(url)] == ["old"]
    finally:
        app.extensions["pneumo.model"].stop()
