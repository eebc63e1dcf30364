"""Every prediction, recorded for monitoring, off the request path.

Rows go to a SQL table (SQLite by default, any SQLAlchemy URL in production) from a background
thread; optionally the image itself goes to S3. A full queue or a failing store drops the record and
counts it: recording never slows down or breaks a prediction.
"""

from __future__ import annotations

import atexit
import io
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
)

from monitoring.features import EMBEDDING_COLUMNS
from pneumo.images import image_stats
from serving.metrics import RECORDS_DROPPED

log = logging.getLogger(__name__)
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


@dataclass
class Observation:
    """What one request saw and answered; the statistics are computed by the recorder thread."""

    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    probability: float
    threshold: float
    label: str
    latency_ms: float
    size: tuple[int, int]  # of the original image (only what the statistics need: never the pixels)
    mode: str
    prepared: np.ndarray
    embedding: dict[str, float] | None = None
    raw: bytes | None = None


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


class Recorder:
    """A bounded queue drained by one daemon thread into the predictions table."""

    def __init__(self, url: str, image_uri_prefix: str | None = None, capacity: int = 10_000) -> None:
        self.url = url
        # Connected by the recorder thread, so a database that is down never blocks start-up.
        self._engine: Engine | None = None
        self.image_uri_prefix = image_uri_prefix
        self.queue: queue.Queue[Observation] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self._lock = threading.Lock()
        self.written = 0
        self._thread = threading.Thread(target=self._drain, name="prediction-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.flush)  # a worker that exits normally writes what it has queued

    def submit(self, observation: Observation) -> bool:
        """Queue an observation without waiting; False (and counted) when the queue is full."""
        try:
            self.queue.put_nowait(observation)
            return True
        except queue.Full:
            self._drop()
            return False

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _drain(self) -> None:
        while True:
            item = self.queue.get()
            try:
                row = self._row(item)
                if self._engine is None:
                    self._engine = make_engine(self.url)
                with self._engine.begin() as connection:
                    connection.execute(predictions.insert().values(**row))
                self.written += 1
            except Exception:
                self._drop()
                log.exception("could not record prediction %s", item.request_id)
            finally:
                self.queue.task_done()

    def _drop(self) -> None:
        with self._lock:
            self.dropped += 1
        RECORDS_DROPPED.inc()

    def _row(self, item: Observation) -> dict[str, Any]:
        row = {
            "request_id": item.request_id,
            "created_at": item.created_at,
            "model_name": item.model_name,
            "model_version": item.model_version,
            "probability": item.probability,
            "threshold": item.threshold,
            "label": item.label,
            "latency_ms": item.latency_ms,
            **image_stats(item.size, item.mode, item.prepared),
            **(item.embedding or {}),
        }
        if self.image_uri_prefix and item.raw is not None:
            row["image_uri"] = self._store_image(item)
        return row

    def _store_image(self, item: Observation) -> str:
        from pneumo.storage import s3_client, split_uri

        bucket, prefix = split_uri(self.image_uri_prefix or "")
        key = f"{prefix}/{item.created_at:%Y/%m/%d}/{item.request_id}".lstrip("/")
        s3_client().upload_fileobj(io.BytesIO(item.raw or b""), bucket, key)
        return f"s3://{bucket}/{key}"


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


def now() -> datetime:
    """The timestamp recorded with a prediction (UTC)."""
    return datetime.now(UTC)
