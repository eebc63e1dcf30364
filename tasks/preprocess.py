"""Preprocess: a raw data folder into the processed format (:mod:`pneumo.processed`)."""

from __future__ import annotations

from typing import Any

from prefect import task

from pneumo.processed import build_processed


@task(name="preprocess", retries=0)
def preprocess(raw_dir: str, params: dict[str, Any], data_version: str = "", out: str | None = None) -> str:
    """Build the train/val/test arrays of a raw folder; returns the processed folder.

    Unreadable images are skipped and counted, not fatal. Without ``out``, the folder is named
    after the data version and parameters, so a rerun with both unchanged reuses it.
    """
    return build_processed(raw_dir, params, data_version, out)
