"""The ``preprocess`` flow: a raw data folder into the processed format (:mod:`pneumo.processed`),
one Prefect task a part (:mod:`pneumo.tasks.preprocess`), spread over prefect-dask's task runner.

Parts are independent, so they are mapped over a Dask cluster: an existing one when
``PNEUMO_DASK_ADDRESS`` is set (``tcp://scheduler:8786``; its workers run this image or this
checkout and must see the raw and processed folders at the same paths: the same machine, or a
shared file system), else a cluster inside this process with a thread per core (decoding releases
the GIL: :mod:`pneumo.prepared`) or, with several parts, a local cluster of a worker process a core
(the Python around each image holds the GIL: at 20,000 synthetic 256-px images threads kept 1.2
cores busy, processes 1.6, 64.7 s -> 50.6 s). Tasks get a part's number and read its rows from the
plan file, so nothing large goes through the scheduler. Either way the output is what
:func:`pneumo.processed.build_processed` writes in one process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import flow, unmapped
from prefect_dask import DaskTaskRunner

from pneumo.config import cores
from pneumo.processed import finish_parts, part_rows, plan_parts
from pneumo.tasks.preprocess import preprocess_part

DASK_ADDRESS = "PNEUMO_DASK_ADDRESS"


def part_runner(parts: int) -> DaskTaskRunner:
    """The task runner of ``parts`` parts: the Dask cluster at ``PNEUMO_DASK_ADDRESS``; else, for
    several parts on several cores, a local cluster of one single-thread worker process a core;
    else (one part, nothing to spread) a cluster of threads in this process, which starts at once."""
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines drown the flow's log
    address = os.environ.get(DASK_ADDRESS, "").strip()
    if address:
        return DaskTaskRunner(address=address)
    workers = min(cores(), parts)
    if workers > 1:
        cluster = {"processes": True, "n_workers": workers, "threads_per_worker": 1}
    else:
        cluster = {"processes": False, "n_workers": 1, "threads_per_worker": cores()}
    return DaskTaskRunner(cluster_kwargs={**cluster, "dashboard_address": None})


@flow(name="preprocess", log_prints=True)
def preprocess_parts(folder: str, parts: int, data: dict[str, Any]) -> str:
    """Write each planned part (:func:`pneumo.processed.plan_parts`) as a task on the flow's task
    runner, then the split table."""
    where = os.environ.get(DASK_ADDRESS, "").strip() or "a Dask cluster on this machine"
    print(f"preprocess: {parts} parts on {where}")
    futures = preprocess_part.map(unmapped(folder), range(parts), unmapped(data))
    written = [future.result() for future in futures]
    planned = [part_rows(folder, part) for part in range(parts)]
    return finish_parts(folder, planned, written, data["image_size"])


def preprocess(raw_dir: str, params: dict[str, Any], data_version: str = "", out: str | None = None) -> str:
    """Build the train/val/test parts of a raw folder: planned here, written by the ``preprocess``
    subflow on :func:`part_runner`; returns the processed folder.

    Unreadable images are skipped and counted, not fatal. Without ``out``, the folder is named
    after the data version and parameters, so a rerun with both unchanged reuses it (no subflow,
    no cluster, and no need for ``PNEUMO_DASK_ADDRESS``'s).
    """
    folder, parts = plan_parts(raw_dir, params, data_version, out)
    if not parts:
        return folder
    print(f"preprocess: {sum(len(rows) for rows in parts)} images in {len(parts)} parts")
    runner = part_runner(len(parts))
    return preprocess_parts.with_options(task_runner=runner)(folder, len(parts), params["data"])
