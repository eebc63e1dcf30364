"""The records' spool: rows kept on disk whole, replayed oldest first, bounded in bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from pneumo.serving.spool import Spool


def test_rows_come_back_as_they_went_in_and_a_row_already_written_counts_as_written(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=100_000)
    rows = [{"request_id": f"r{i}", "created_at": datetime(2026, 12, 8, 1, i, tzinfo=UTC), "p": 0.25}
            for i in range(3)]  # fmt: skip
    assert all(spool.put(row) for row in rows)
    assert spool.count() == 3 and spool.holds("r1") and not spool.holds("r9")
    again = Spool(tmp_path / "spool", max_bytes=100_000)  # the next worker, after a restart
    written = []

    def insert(row):
        if row["request_id"] == "r1":
            raise IntegrityError("INSERT", {}, Exception("duplicate key"))  # written before a crash
        written.append(row)

    assert again.replay(insert) == 2
    assert sorted(written, key=lambda row: row["request_id"]) == [rows[0], rows[2]] and again.count() == 0


def test_a_failing_database_keeps_the_rows_and_a_full_spool_refuses_more(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=300)
    row = {"request_id": "r0", "created_at": datetime.now(UTC), "label": "NORMAL"}
    assert spool.put(row)

    def down(row):
        raise ConnectionError("the database is restarting")

    with pytest.raises(ConnectionError):
        spool.replay(down)
    assert spool.holds("r0")
    assert not spool.put({**row, "request_id": "r1", "reason": "x" * 400})  # beyond max_bytes
    assert spool.count() == 1
