"""pneumo.storage: S3 URIs, training sources of several prefixes, the bounded transfer pool (no servers)."""

from __future__ import annotations

import threading
import time

import pytest

from pneumo.storage import concurrently, join_sources, split_sources, split_uri, transfer_concurrency


def test_a_source_is_one_prefix_or_several():
    assert split_sources("s3://raw/clinic") == ["s3://raw/clinic"]
    assert split_sources(" s3://raw/clinic/ , s3://raw/feedback") == ["s3://raw/clinic", "s3://raw/feedback"]
    assert join_sources(["s3://raw/a", "s3://raw/b", "s3://raw/a"]) == "s3://raw/a,s3://raw/b"
    assert split_uri("s3://raw/some/prefix/") == ("raw", "some/prefix")


@pytest.mark.parametrize("bad", ["", " , ", "s3://raw/a,/local/folder", "https://raw/a"])
def test_anything_but_s3_uris_is_refused(bad: str):
    with pytest.raises(ValueError):
        split_sources(bad)


def test_transfers_run_at_once_up_to_the_pool_size(monkeypatch: pytest.MonkeyPatch):
    running, most, lock = [0], [0], threading.Lock()

    def slow(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return item * 2

    started = time.monotonic()
    assert sorted(concurrently(slow, range(40), threads=8)) == [i * 2 for i in range(40)]
    assert most[0] == 8  # never more than the pool, and the pool was used
    assert time.monotonic() - started < 40 * 0.05 / 2  # not one at a time


def test_the_first_failure_stops_the_transfers_not_started():
    started: list[int] = []

    def fail_on_three(item: int) -> int:
        started.append(item)
        if item == 3:
            raise OSError("S3 went away")
        time.sleep(0.01)
        return item

    with pytest.raises(OSError, match="S3 went away"):
        list(concurrently(fail_on_three, range(1000), threads=2))
    assert len(started) < 20  # at most the queued ones ran, not the whole list


@pytest.mark.parametrize("value", ["0", "x", "1000", "-3"])
def test_the_concurrency_setting_is_checked(monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv("PNEUMO_S3_CONCURRENCY", value)
    with pytest.raises(ValueError, match="PNEUMO_S3_CONCURRENCY must be a whole number"):
        transfer_concurrency()
    monkeypatch.setenv("PNEUMO_S3_CONCURRENCY", "4")
    assert transfer_concurrency() == 4
