"""Prediction rows the records database could not take, kept on disk until it can.

One JSON file a row (``<request id>.json``) in ``state_dir()/spool/records-<database>``, written
whole or not at all; shared by every worker of the service (and the next one after a restart): any of them
replays any file, and a row the database already has (its request id is the primary key) counts
as written. Bounded in bytes: beyond ``max_bytes`` a row is refused (the caller counts it dropped).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

DATETIMES = "__datetimes__"  # the keys whose values were datetimes, to restore them


class Spool:
    """Rows waiting for the database, one file each, oldest replayed first."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self._lock = threading.Lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._bytes = sum(path.stat().st_size for path in self._files() if path.exists())

    def _files(self) -> list[Path]:
        """The waiting rows, oldest first (a file another worker replays meanwhile is left out)."""
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:  # its folder removed (a test's state folder at teardown)
            return []
        for entry in entries:
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                try:
                    found.append((entry.stat().st_mtime, entry.path))
                except FileNotFoundError:
                    continue
        return [Path(path) for _, path in sorted(found)]

    def put(self, row: dict[str, Any]) -> bool:
        """Keep a row; False (kept nowhere) when the spool holds ``max_bytes`` already."""
        dates = [key for key, value in row.items() if isinstance(value, datetime)]
        text = json.dumps({**row, **{key: row[key].isoformat() for key in dates}, DATETIMES: dates})
        with self._lock:
            if self._bytes + len(text) > self.max_bytes:
                return False
            self._bytes += len(text)
        path = self.folder / f"{row['request_id']}.json"
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        partial.write_text(text)
        os.replace(partial, path)  # whole or not at all
        return True

    def holds(self, request_id: str) -> bool:
        """Whether the row of ``request_id`` is waiting here."""
        return (self.folder / f"{request_id}.json").exists()

    def count(self) -> int:
        return len(self._files())

    def replay(self, insert: Callable[[dict[str, Any]], None]) -> int:
        """Insert every waiting row, oldest first, removing each once the database has it.

        Returns:
            How many rows went to the database.

        Raises:
            Exception: the first insert error other than "already there" (the rest wait).
        """
        done = 0
        for path in self._files():
            try:
                stored = json.loads(path.read_text())
            except FileNotFoundError:  # another worker replayed it
                continue
            dates = stored.pop(DATETIMES, [])
            row = {**stored, **{key: datetime.fromisoformat(stored[key]) for key in dates}}
            try:
                insert(row)
                done += 1
            except IntegrityError:  # written before (by another worker, or before a crash)
                pass
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:  # another worker removed it first
                size = 0
            with self._lock:
                self._bytes = max(0, self._bytes - size)
        return done
