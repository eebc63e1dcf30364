"""Every prediction, recorded for monitoring, off the request path, and never lost to an outage.

Rows go to a SQL table (SQLite by default, any SQLAlchemy URL in production) from a background
thread. A row the database cannot take (PostgreSQL restarting, a full disk) waits in a spool on disk
(:mod:`pneumo.serving.spool`) and is written when the database is back, retried with backoff. With
``PNEUMO_STORE_IMAGES_URI`` the image goes to S3 on its own: the row is written whether or not the
image can be stored, and the image is retried, then linked to its row. What waits in memory is
bounded in bytes (uploads are up to 20 MB): beyond it an image is let go before its row is, and
every loss is counted. Recording never slows down or breaks a prediction; ``/ready`` says what waits.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError

from pneumo.config import state_dir
from pneumo.images import deidentified_png, image_stats
from pneumo.monitoring.records import make_engine, predictions
from pneumo.serving.metrics import RECORDS_DROPPED
from pneumo.serving.spool import Spool
from pneumo.storage import s3_client, split_uri

log = logging.getLogger(__name__)
MEMORY_BYTES = int(float(os.environ.get("PNEUMO_RECORDS_MEMORY_MB", "256")) * 2**20)  # queued + images
SPOOL_BYTES = int(float(os.environ.get("PNEUMO_RECORDS_SPOOL_MB", "512")) * 2**20)  # rows on disk
RETRY_S = (1.0, 30.0)  # backoff of the spool's and the images' retries: first and longest wait


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

    def nbytes(self) -> int:
        return len(self.raw or b"") + self.prepared.nbytes + 2048


@dataclass
class PendingImage:
    """An image to store, then to link to its row (which may itself still be in the spool)."""

    request_id: str
    created_at: datetime
    body: bytes  # de-identified: pixels only
    uri: str | None = None  # set once stored


class Recorder:
    """A queue bounded in bytes, drained by one daemon thread into the predictions table."""

    def __init__(self, url: str, image_uri_prefix: str | None = None, memory_bytes: int = MEMORY_BYTES,
                 spool_bytes: int = SPOOL_BYTES) -> None:  # fmt: skip
        self.url = url
        # Connected by the recorder thread, so a database that is down never blocks start-up.
        self._engine: Engine | None = None
        self.image_uri_prefix = image_uri_prefix
        self.memory_bytes = memory_bytes
        self.queue: queue.Queue[Observation] = queue.Queue()
        database = hashlib.sha256(url.encode()).hexdigest()[:12]  # a spool per database
        self.spool = Spool(state_dir() / "spool" / f"records-{database}", spool_bytes)
        self.images: list[PendingImage] = []
        self._held = 0  # bytes in the queue and in self.images
        self._lock = threading.Lock()
        self.dropped = self.images_dropped = self.written = 0
        self.failing_since: datetime | None = None  # the first of the failures in a row, if failing
        self.last_failure: str | None = None
        self._retry_at, self._retry_wait = 0.0, RETRY_S[0]  # of the spooled rows (the database)
        self._images_at, self._images_wait = 0.0, RETRY_S[0]  # of the images (S3), on their own
        self.images_failure: str | None = None
        self._thread = threading.Thread(target=self._drain, name="prediction-recorder", daemon=True)
        self._thread.start()
        # Images on a thread of their own: S3's retries and timeouts never hold rows back.
        threading.Thread(target=self._image_loop, name="prediction-images", daemon=True).start()
        atexit.register(self.flush)  # a worker that exits normally writes what it has queued

    def submit(self, observation: Observation) -> bool:
        """Queue an observation without waiting. Over the memory bound its image is let go first,
        then the record (False, counted)."""
        with self._lock:
            if observation.raw is not None and self._held + observation.nbytes() > self.memory_bytes:
                observation.raw = None
                self.images_dropped += 1
            size = observation.nbytes()
            if self._held + size > self.memory_bytes:
                self._drop_locked()
                return False
            self._held += size
        self.queue.put(observation)
        return True

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything queued so far is written or spooled (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def settle(self, timeout_s: float = 10.0) -> bool:
        """Retry the spool and the images now, until nothing waits or ``timeout_s``; whether settled."""
        self.flush(timeout_s)
        deadline = time.monotonic() + timeout_s
        while (waiting := self.spool.count() + len(self.images)) and time.monotonic() < deadline:
            self._retry_at = self._images_at = 0.0
            time.sleep(0.1)
        return not waiting

    def pending(self) -> dict[str, int]:
        """What waits: observations in the queue, rows in the spool, images to store or link."""
        return {"queued": self.queue.unfinished_tasks, "spooled": self.spool.count(),
                "images": len(self.images)}  # fmt: skip

    def holds(self, request_id: str) -> bool:
        """Whether the row of ``request_id`` waits in the spool (recorded, not yet in the database)."""
        return self.spool.holds(request_id)

    def image_waits(self, request_id: str) -> bool:
        """Whether the image of ``request_id`` is still to be stored or linked to its row."""
        return any(image.request_id == request_id for image in list(self.images))

    def _connect(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)  # upgrades an older release's database first
        return self._engine

    def _insert(self, row: dict[str, Any]) -> None:
        with self._connect().begin() as connection:
            connection.execute(predictions.insert().values(**row))

    def _drain(self) -> None:
        try:  # on start, so an older database is upgraded before the first prediction needs it
            self._connect()
        except Exception as error:  # the store is down: tried again with the first record
            log.warning("the records store is not reachable yet: %s", _reason(error))
        while True:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is not None:
                try:
                    self._record(item)
                finally:
                    with self._lock:
                        self._held -= item.nbytes()
                    self.queue.task_done()
            self._retry()

    def _record(self, item: Observation) -> None:
        """Write the row (or spool it), then hand its image to the image retries."""
        try:
            row = self._row(item)
        except Exception as error:  # statistics of a broken array: a bug, counted and logged
            self._drop()
            log.error("could not record prediction %s: %s", item.request_id, _reason(error))
            return
        spool = self.failing_since is not None and time.monotonic() < self._retry_at  # an outage: wait
        if not spool:
            try:
                self._insert(row)
                self.written += 1
                self._recovered()
            except IntegrityError:
                pass  # written before
            except Exception as error:
                self._failed(error)
                self._retry_at, spool = time.monotonic() + self._retry_wait, True
        if spool and self.spool.put(row):
            log.error("could not record prediction %s, kept in the spool: %s", item.request_id,
                      self.last_failure)  # fmt: skip
        elif spool:
            self._drop()
            log.error("could not record prediction %s (the spool is full): %s", item.request_id,
                      self.last_failure)  # fmt: skip
        if self.image_uri_prefix and item.raw is not None:
            body = deidentified_png(item.raw)
            with self._lock:
                self.images.append(PendingImage(item.request_id, item.created_at, body))
                self._held += len(body)
            self._images_at = 0.0  # store it now

    def _retry(self) -> None:
        """The spool's rows, when the backoff allows (doubling while the database fails)."""
        now = time.monotonic()
        if now >= self._retry_at and self.spool.count():
            try:
                self.written += self.spool.replay(self._insert)
                self._recovered()
                self._retry_wait = RETRY_S[0]
            except Exception as error:
                self._failed(error)
                self._retry_wait = min(self._retry_wait * 2, RETRY_S[1])
            self._retry_at = now + self._retry_wait

    def _image_loop(self) -> None:
        """Store and link the waiting images, each round when the backoff allows."""
        while True:
            time.sleep(0.1)
            if time.monotonic() < self._images_at or not self.images:
                continue
            try:
                self._store_images()
                self.images_failure, self._images_wait = None, RETRY_S[0]
            except Exception as error:  # S3 (or the row's database) unreachable: the images wait
                self.images_failure = _reason(error)
                self._images_wait = min(self._images_wait * 2, RETRY_S[1])
            self._images_at = time.monotonic() + self._images_wait

    def _store_images(self) -> None:
        for image in list(self.images):
            if image.uri is None:
                image.uri = self._store_image(image)
            link = update(predictions).where(predictions.c.request_id == image.request_id)
            with self._connect().begin() as connection:
                linked = connection.execute(link.values(image_uri=image.uri)).rowcount
            if linked or not self.spool.holds(image.request_id):
                with self._lock:  # linked; or its row was dropped (the spool was full): nothing to link to
                    self.images.remove(image)
                    self._held -= len(image.body)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.info("recording works again after failing since %s", self.failing_since)
        self.failing_since = None

    def _failed(self, error: Exception) -> None:
        self.last_failure = _reason(error)
        self.failing_since = self.failing_since or now()

    def health(self) -> dict[str, Any]:
        """For ``/ready``: whether the last write worked, and if not, since when and why; what waits."""
        failing = self.failing_since is not None
        return {
            "ok": not failing,
            "written": self.written,
            "dropped": self.dropped,
            "images_dropped": self.images_dropped,
            "pending": self.pending(),
            "failing_since": self.failing_since.isoformat() if failing else None,
            "last_failure": self.last_failure if failing else None,
            "images_failure": self.images_failure,
        }

    def _drop(self) -> None:
        with self._lock:
            self._drop_locked()

    def _drop_locked(self) -> None:
        self.dropped += 1
        RECORDS_DROPPED.inc()

    def _row(self, item: Observation) -> dict[str, Any]:
        return {
            "request_id": item.request_id,
            "created_at": item.created_at,
            "model_name": item.model_name,
            "model_version": item.model_version,
            "probability": float(item.probability),
            "threshold": float(item.threshold),
            "site": item.site,
            "label": item.label,
            "latency_ms": item.latency_ms,
            **{key: _plain(value) for key, value in image_stats(item.size, item.mode, item.prepared).items()},
            **{key: float(value) for key, value in (item.embedding or {}).items()},
        }

    def _store_image(self, image: PendingImage) -> str:
        """Store the image's pixels (never a DICOM header, an EXIF block, a JPEG comment or a PNG
        text chunk: PACS exports put the patient's name there); its URI."""
        bucket, prefix = split_uri(self.image_uri_prefix or "")
        key = f"{prefix}/{image.created_at:%Y/%m/%d}/{image.request_id}".lstrip("/")
        s3_client().upload_fileobj(io.BytesIO(image.body), bucket, key)
        return f"s3://{bucket}/{key}"


def _plain(value: Any) -> Any:
    """A numpy number as the Python number the spool's JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value


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
