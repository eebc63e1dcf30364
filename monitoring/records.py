"""The production records: one row per prediction, written by the service and read by monitoring,
and the clinicians' confirmed diagnoses of those predictions.

``predictions`` holds what a request saw (image statistics, the model's probability and embedding,
the model version) and never the pixels. ``feedback`` holds every label a clinician sent for a
prediction, never overwritten: the newest one counts, the older ones stay as history. SQLite by
default, any SQLAlchemy URL in production.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from pneumo.monitoring.features import EMBEDDING_COLUMNS

metadata = MetaData()
predictions = Table(
    "predictions",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(20), nullable=False),
    Column("probability", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("site", String(63)),  # where it was predicted (PNEUMO_SITE); ``threshold`` is what decided
    Column("label", String(20), nullable=False),
    Column("latency_ms", Float),
    Column("width", Integer),
    Column("height", Integer),
    Column("aspect", Float),
    Column("mode", String(10)),
    Column("bit_depth", Integer),
    *(
        Column(name, Float)
        for name in ("mean", "std", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "entropy")
    ),
    *(Column(name, Float) for name in EMBEDDING_COLUMNS),
    Column("image_uri", String(500)),
)
LABELS = ("NORMAL", "PNEUMONIA")  # a prediction's and a confirmed diagnosis's label; index = class
feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(36), nullable=False, index=True),
    Column("label", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("copied_to", String(500)),  # the de-identified training copy of the image, if any
)
operator_events = Table(  # what Prefect automations tell operators (pneumo.notify): failures, promotions
    "operator_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("event", String(200), nullable=False),
    Column("name", String(500)),
    Column("message", String(2000)),
    Column("body", Text, nullable=False),
)


def make_engine(url: str) -> Engine:
    """An engine for ``url``, its database upgraded to the newest schema (:func:`upgrade`) on first use
    in this process. SQLite gets WAL and a busy timeout so workers can share the file."""
    engine = create_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    with _UPGRADING:
        if url not in _UPGRADED:
            upgrade(engine)
            _UPGRADED.add(url)
    return engine


MIGRATIONS = "pneumo.monitoring:migrations"  # Alembic's script location
VERSION_TABLE = "pneumo_records_version"  # not alembic_version: the records may share MLflow's database
_UPGRADING = threading.Lock()
_UPGRADED: set[str] = set()  # databases this process has upgraded already


def upgrade(engine: Engine, attempts: int = 5) -> str:
    """Bring the database to the newest revision of the records schema; returns that revision.

    A database made before the records had migrations is brought up to date too: each revision
    skips what the database holds already. Processes that upgrade at once (two workers, the service
    and the monitoring flow) take turns: PostgreSQL under an advisory lock; elsewhere the loser
    retries, finding the work done.
    """
    config = alembic_config()
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                return current_revision(connection) or ""
        except DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def alembic_config() -> Config:
    """Alembic's configuration of the records' migrations."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def current_revision(connection: Any) -> str | None:
    """The records schema's revision in the database (None: made before migrations, or empty)."""
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


_LOCK_KEY = 0x706E65756D6F  # "pneumo": the advisory lock the upgrade holds


def _window_query(
    since: datetime | None, until: datetime | None, model_name: str | None, model_version: str | None
) -> Select:
    latest = _newest_labels().subquery()
    query = (
        select(predictions, latest.c.label.label("confirmed_label"))
        .outerjoin(latest, latest.c.request_id == predictions.c.request_id)
        .order_by(predictions.c.created_at)
    )
    if model_name is not None:
        query = query.where(predictions.c.model_name == model_name)
    if model_version is not None:
        query = query.where(predictions.c.model_version == model_version)
    if since is not None:
        query = query.where(predictions.c.created_at >= since)
    if until is not None:
        query = query.where(predictions.c.created_at < until)
    return query


def _stream(url: str, query: Select) -> Iterator[dict]:
    """The rows of ``query``, fetched 10,000 at a time (a server-side cursor where the database has one)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            for row in connection.execution_options(yield_per=10_000).execute(query):
                record = dict(row._mapping)
                record["created_at"] = _utc(record["created_at"])  # everything is stored in UTC
                yield record
    finally:
        engine.dispose()


def read_records(
    url: str,
    since: datetime | None = None,
    until: datetime | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[dict]:
    """Recorded predictions in ``[since, until)``, oldest first, optionally of one model version.

    Each row carries ``confirmed_label``: the newest label a clinician confirmed for it, or None.
    """
    return list(_stream(url, _window_query(since, until, model_name, model_version)))


@dataclass
class WindowSample:
    """A window's records, bounded: a uniform sample of every record and of the labelled ones (at
    most ``limit`` each, oldest first), and the counts over all of them."""

    rows: list[dict] = field(default_factory=list)
    labelled_rows: list[dict] = field(default_factory=list)
    records: int = 0
    positives: int = 0
    labelled: int = 0


def sample_window(
    url: str, since: datetime, until: datetime, model_name: str, model_version: str, limit: int, seed: int = 0
) -> WindowSample:
    """Stream the window's records once, keeping uniform samples of at most ``limit`` records and
    ``limit`` labelled records (reservoir sampling, seeded): memory stays bounded however many
    records the window holds, and the counts (records, answered PNEUMONIA, labelled) are exact."""
    rng = np.random.default_rng(seed)
    sample = WindowSample()

    def keep(reservoir: list[dict], row: dict, seen: int) -> None:
        if len(reservoir) < limit:
            reservoir.append(row)
        elif (slot := int(rng.integers(seen))) < limit:
            reservoir[slot] = row

    for row in _stream(url, _window_query(since, until, model_name, model_version)):
        sample.records += 1
        sample.positives += row["label"] == LABELS[1]
        keep(sample.rows, row, sample.records)
        if row["confirmed_label"] is not None:
            sample.labelled += 1
            keep(sample.labelled_rows, row, sample.labelled)
    for reservoir in (sample.rows, sample.labelled_rows):
        reservoir.sort(key=lambda row: row["created_at"])
    return sample


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone


def _newest_labels() -> Select:
    """``(request_id, label)`` of the newest feedback row of every prediction that has one."""
    newest = select(func.max(feedback.c.id).label("id")).group_by(feedback.c.request_id).subquery()
    return select(feedback.c.request_id, feedback.c.label).join(newest, feedback.c.id == newest.c.id)


def confirmed_labels(engine: Engine) -> dict[str, str]:
    """The newest confirmed label of each prediction that has one."""
    with engine.connect() as connection:
        return {row.request_id: row.label for row in connection.execute(_newest_labels())}


def feedback_history(engine: Engine, request_id: str) -> list[dict[str, Any]]:
    """Every label sent for one prediction, oldest first."""
    query = select(feedback).where(feedback.c.request_id == request_id).order_by(feedback.c.id)
    with engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    return [{**row, "created_at": _utc(row["created_at"])} for row in rows]


def prediction(engine: Engine, request_id: str) -> dict[str, Any] | None:
    """One recorded prediction, or None."""
    with engine.connect() as connection:
        row = connection.execute(select(predictions).where(predictions.c.request_id == request_id)).first()
    return None if row is None else {**row._mapping, "created_at": _utc(row.created_at)}


def add_feedback(engine: Engine, request_id: str, label: str) -> dict[str, Any]:
    """Record a confirmed label; returns the new row (``id``, ``created_at``)."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    row = {"request_id": request_id, "label": label, "created_at": datetime.now(UTC)}
    with engine.begin() as connection:
        row["id"] = connection.execute(feedback.insert().values(**row)).inserted_primary_key[0]
    return row


def set_copied_to(engine: Engine, feedback_id: int, uri: str) -> None:
    """Note where the de-identified training copy of a confirmed image went."""
    with engine.begin() as connection:
        connection.execute(feedback.update().where(feedback.c.id == feedback_id).values(copied_to=uri))


def add_operator_event(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
    """Store one event as received (its JSON kept whole); returns the row."""
    row = {
        "received_at": datetime.now(UTC),
        "event": str(body.get("event") or "unknown")[:200],
        "name": str(body.get("name") or "")[:500] or None,
        "message": str(body.get("message") or "")[:2000] or None,
        "body": json.dumps(body, default=str),
    }
    with engine.begin() as connection:
        row["id"] = connection.execute(operator_events.insert().values(**row)).inserted_primary_key[0]
    return row


def recent_operator_events(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The newest events first."""
    query = select(operator_events).order_by(operator_events.c.id.desc()).limit(limit)
    with engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    return [{**row, "received_at": _utc(row["received_at"]), "body": json.loads(row["body"])} for row in rows]
