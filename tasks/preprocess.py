"""Preprocess one part of a data set (:func:`pneumo.processed.write_part`); the ``preprocess``
flow (:mod:`pneumo.flows.preprocess_flow`) maps it over the parts on a Dask cluster."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from pneumo.processed import part_rows, write_part


@task(name="preprocess-part", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def preprocess_part(folder: str, part: int, data: dict[str, Any]) -> dict[str, Any]:
    """:func:`pneumo.processed.write_part` of a planned part (its rows read from the plan): its
    images prepared and its splits written (whole or not at all, so a retry starts it clean)."""
    return write_part(folder, part, part_rows(folder, part), data)
