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
from sqlalchemy import Engine

from pneumo.images import deidentified_png, image_stats
from pneumo.monitoring.records import make_engine, predictions
from pneumo.serving.metrics import RECORDS_DROPPED
from pneumo.storage import s3_client, split_uri

log = logging.getLogger(__name__)


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
    site: str | None
    size: tuple[int, int]  # of the original image (only what the statistics need: never the pixels)
    mode: str
    prepared: np.ndarray
    embedding: dict[str, float] | None = None
    raw: bytes | None = None


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
        self.failing_since: datetime | None = None  # the first of the failures in a row, if failing
        self.last_failure: str | None = None
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

    def _connect(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)  # upgrades an older release's database first
        return self._engine

    def _drain(self) -> None:
        try:  # on start, so an older database is upgraded before the first prediction needs it
            self._connect()
        except Exception as error:  # the store is down: tried again with the first record
            log.warning("the records store is not reachable yet: %s", _reason(error))
        while True:
            item = self.queue.get()
            try:
                row = self._row(item)
                with self._connect().begin() as connection:
                    connection.execute(predictions.insert().values(**row))
                self.written += 1
                if self.failing_since is not None:
                    log.info("recording works again after failing since %s", self.failing_since)
                self.failing_since = None
            except Exception as error:
                self._drop()
                self.last_failure = _reason(error)
                self.failing_since = self.failing_since or now()
                log.error("could not record prediction %s: %s", item.request_id, self.last_failure)
            finally:
                self.queue.task_done()

    def health(self) -> dict[str, Any]:
        """For ``/ready``: whether the last record was written, and if not, since when and why."""
        failing = self.failing_since is not None
        return {
            "ok": not failing,
            "written": self.written,
            "dropped": self.dropped,
            "failing_since": self.failing_since.isoformat() if failing else None,
            "last_failure": self.last_failure if failing else None,
        }

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
            "site": item.site,
            "label": item.label,
            "latency_ms": item.latency_ms,
            **image_stats(item.size, item.mode, item.prepared),
            **(item.embedding or {}),
        }
        if self.image_uri_prefix and item.raw is not None:
            row["image_uri"] = self._store_image(item)
        return row

    def _store_image(self, item: Observation) -> str:
        bucket, prefix = split_uri(self.image_uri_prefix or "")
        key = f"{prefix}/{item.created_at:%Y/%m/%d}/{item.request_id}".lstrip("/")
        # Pixels only: never a DICOM header, an EXIF block, a JPEG comment or a PNG text chunk (PACS
        # exports put the patient's name there).
        body = deidentified_png(item.raw or b"")
        s3_client().upload_fileobj(io.BytesIO(body), bucket, key)
        return f"s3://{bucket}/{key}"


def _reason(error: Exception) -> str:
    """Why a write failed, on one line (a driver's error may run to many)."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:500]


def now() -> datetime:
    """The timestamp recorded with a prediction (UTC)."""
    return datetime.now(UTC)


class RecordsDatabase:
    """The records database for the request path (feedback, operator events), connected on first use:
    a database that is down never blocks start-up."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url)
            return self._engine
