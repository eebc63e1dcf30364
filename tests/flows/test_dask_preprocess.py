"""Preprocessing's parts through a real Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes on this machine, the ``preprocess`` flow pointed at them by ``PNEUMO_DASK_ADDRESS``, and
its output compared with the one-process path's."""

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
from pneumo.config import load_params
from pneumo.flows.preprocess_flow import DASK_ADDRESS, preprocess
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

    summary = json.loads((on_dask / "summary.json").read_text())
    assert summary["parts"] == 6 and summary["unreadable"] == 1
    assert summary == json.loads((local / "summary.json").read_text())
    assert (on_dask / "split.csv").read_text() == (local / "split.csv").read_text()
    files = sorted(path.name for path in (on_dask / "parts").iterdir())
    assert files == sorted(path.name for path in (local / "parts").iterdir())
    assert len(files) == 6 * 4  # train, val, test and train_context of each part
    for name in files:
        with np.load(on_dask / "parts" / name) as ours, np.load(local / "parts" / name) as theirs:
            assert ours.files == theirs.files
            assert all(np.array_equal(ours[key], theirs[key]) for key in ours.files), name
    for log in worker_logs:  # both workers prepared parts, each into its own cache
        assert "preprocess-part" in log.read_text(), log.read_text()[-3000:]
        worker_state = tmp_path / log.stem
        assert any((worker_state / "cache" / "prepared").rglob("*.npy"))
