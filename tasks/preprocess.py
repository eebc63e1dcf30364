"""Preprocess one part of a data set (:func:`pneumo.processed.write_part`); the ``preprocess``
flow (:mod:`pneumo.flows.preprocess_flow`) maps it over the parts on a Dask cluster."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from pneumo.processed import write_part


@task(name="preprocess-part", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def preprocess_part(folder: str, part: int, rows: pd.DataFrame, data: dict[str, Any]) -> dict[str, Any]:
    """:func:`pneumo.processed.write_part`: one part's images prepared and its splits written
    (whole or not at all, so a retry or a rerun starts it clean)."""
    return write_part(folder, part, rows, data)
