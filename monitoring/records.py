"""The production records: one row per prediction, written by the service and read by monitoring.

The table holds what a request saw (image statistics, the model's probability and embedding, the
model version) and never the pixels. SQLite by default, any SQLAlchemy URL in production.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
)

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


def make_engine(url: str):
    """An engine for ``url``; SQLite gets WAL and a busy timeout so workers can share the file."""
    engine = create_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    metadata.create_all(engine)
    return engine


def read_records(
    url: str,
    since: datetime | None = None,
    until: datetime | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[dict]:
    """Recorded predictions in ``[since, until)``, oldest first, optionally of one model version."""
    query = select(predictions).order_by(predictions.c.created_at)
    if model_name is not None:
        query = query.where(predictions.c.model_name == model_name)
    if model_version is not None:
        query = query.where(predictions.c.model_version == model_version)
    if since is not None:
        query = query.where(predictions.c.created_at >= since)
    if until is not None:
        query = query.where(predictions.c.created_at < until)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()
    for row in rows:  # SQLite drops the zone; everything is stored in UTC
        if row["created_at"].tzinfo is None:
            row["created_at"] = row["created_at"].replace(tzinfo=UTC)
    return rows
