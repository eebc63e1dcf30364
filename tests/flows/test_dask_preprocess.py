"""Preprocessing's parts through a real Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes on this machine, the ``preprocess`` flow pointed at them by ``PNEUMO_DASK_ADDRESS``, and
its output compared with the one-process path's; then the default, a local cluster of worker
processes, compared the same way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, wait_until

import pneumo.processed as processed
from pneumo.config import cores, load_params
from pneumo.flows.preprocess_flow import DASK_ADDRESS, part_runner, preprocess
from pneumo.stack import terminate_group

pytestmark = pytest.mark.integration
DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def dask_cluster(stack, tmp_path: Path) -> Iterator[tuple[str, list[Path]]]:
    """A scheduler and two single-thread workers, each worker with a state folder (and so a
    prepared-image cache) of its own, as on two machines; their logs in tmp_path."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes, logs = [], []

    def start(name: str, command: list[str], env: dict[str, str]) -> None:
        log = tmp_path / f"{name}.log"
        logs.append(log)
        with log.open("wb") as out:
            processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))  # fmt: skip

    start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
          dict(os.environ))  # fmt: skip
    for name in ("worker-1", "worker-2"):
        env = {**os.environ, "PNEUMO_STATE_DIR": str(tmp_path / name)}
        start(name, [DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name], env)
    from distributed import Client

    def two_workers() -> bool:
        try:
            with Client(address, timeout=2) as client:
                return len(client.scheduler_info()["workers"]) == 2
        except OSError:
            return False

    wait_until(two_workers, processes[0], 90, lambda: "\n".join(p.read_text()[-2000:] for p in logs))
    yield address, logs[1:]
    for process in processes[::-1]:
        terminate_group(process.pid, grace_s=10)


def test_parts_on_a_dask_cluster_match_one_process(
    dask_cluster, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    address, worker_logs = dask_cluster
    raw = tmp_path / "raw"
    shutil.copytree(synthetic_dir, raw)
    (raw / "images" / sorted(os.listdir(raw / "images"))[3]).write_bytes(b"not an image")
    monkeypatch.setattr(processed, "PART_ROWS", 40)  # 6 parts for the two workers
    params = load_params("test", {"data": {"augment": {"online": True}}})
    monkeypatch.setenv(DASK_ADDRESS, address)
    on_dask = Path(preprocess(str(raw), params, "v-dask", str(tmp_path / "dask")))
    local = Path(processed.build_processed(str(raw), params, "v-dask", str(tmp_path / "local")))

    assert_same_output(on_dask, local)
    assert json.loads((on_dask / "summary.json").read_text())["unreadable"] == 1
    for log in worker_logs:  # both workers prepared parts, each into its own cache
        assert "preprocess-part" in log.read_text(), log.read_text()[-3000:]
        worker_state = tmp_path / log.stem
        assert any((worker_state / "cache" / "prepared").rglob("*.npy"))


def assert_same_output(ours: Path, theirs: Path) -> None:
    """Two processed folders of one raw folder in 6 parts hold the same summary, table, plan and arrays."""
    summary = json.loads((ours / "summary.json").read_text())
    assert summary["parts"] == 6
    assert summary == json.loads((theirs / "summary.json").read_text())
    assert (ours / "split.csv").read_text() == (theirs / "split.csv").read_text()
    files = sorted(path.name for path in (ours / "parts").glob("*.npz"))
    assert files == sorted(path.name for path in (theirs / "parts").glob("*.npz"))
    assert len(files) == 6 * 4  # train, val, test and train_context of each part
    for part in range(6):  # the plan the workers read
        assert processed.part_rows(str(ours), part).equals(processed.part_rows(str(theirs), part))
    for name in files:
        with np.load(ours / "parts" / name) as mine, np.load(theirs / "parts" / name) as other:
            assert mine.files == other.files
            assert all(np.array_equal(mine[key], other[key]) for key in mine.files), name


def test_several_parts_without_an_address_run_on_local_worker_processes(
    stack, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No ``PNEUMO_DASK_ADDRESS`` and several parts: a local cluster of worker processes (one a
    core) writes them, and the output is again the one-process path's."""
    monkeypatch.setattr(processed, "PART_ROWS", 40)
    monkeypatch.delenv(DASK_ADDRESS, raising=False)
    assert part_runner(6).cluster_kwargs["processes"] == (cores() > 1)
    assert part_runner(1).cluster_kwargs["processes"] is False  # one part: threads, no process start
    params = load_params("test", {"data": {"augment": {"online": True}}})
    folder = Path(preprocess(str(synthetic_dir), params, "v-local", str(tmp_path / "workers")))
    assert_same_output(folder, Path(processed.build_processed(str(synthetic_dir), params, "v-local",
                                                              str(tmp_path / "local"))))  # fmt: skip
