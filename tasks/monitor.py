"""Monitoring tasks: production records, the champion's reference, the drift report and its upload."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from botocore.exceptions import ClientError
from prefect import task

from pneumo.config import Settings
from pneumo.contract import REFERENCE_ARTIFACT, Recipe, VersionSpec
from pneumo.models import alias_version
from pneumo.monitoring.drift import drift_report
from pneumo.monitoring.performance import describe, live_performance
from pneumo.monitoring.records import sample_window
from pneumo.services import SERVICE_TASK, until_reachable
from pneumo.storage import join_sources, list_objects, s3_client, split_sources


def parse_window(since: str | None, until: str | None, days: float) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC; defaults: the last ``days`` days up to now."""

    def parse(value: str) -> datetime:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)

    end = parse(until) if until else datetime.now(UTC)
    start = parse(since) if since else end - timedelta(days=days)
    if start >= end:
        raise ValueError(f"empty window: since {start.isoformat()} is not before until {end.isoformat()}")
    return start, end


@task(name="load-production-records", retries=2, retry_delay_seconds=5)
def load_production(
    records_url: str,
    start: datetime,
    end: datetime,
    workdir: str,
    model_name: str,
    model_version: str,
    max_records: int,
) -> dict[str, Any]:
    """Write the window's predictions by one model version to ``current.csv``, and those with a
    confirmed label to ``labelled.csv``: every one up to ``max_records`` each, a uniform sample of
    them beyond (:func:`pneumo.monitoring.records.sample_window`), so memory and the report's time
    stay bounded however busy the window was.

    Only that version's rows are comparable with its reference: another version's probabilities and
    embeddings (its own PCA) live on other scales.

    Returns:
        ``path`` and ``labelled_path`` of the CSVs, ``records`` (all of the window's),
        ``positive_rate`` (the share answered PNEUMONIA, of all), ``labelled`` (records with a
        confirmed diagnosis) and ``sampled`` (the rows in ``current.csv``).
    """
    seed = int(start.timestamp())  # another window, another sample; the same window, the same one
    window = sample_window(records_url, start, end, model_name, model_version, max_records, seed)
    path, labelled_path = Path(workdir) / "current.csv", Path(workdir) / "labelled.csv"
    pd.DataFrame(window.rows).to_csv(path, index=False)
    pd.DataFrame(window.labelled_rows).to_csv(labelled_path, index=False)
    sampled = (
        f", the report on a uniform sample of {len(window.rows)}" if len(window.rows) < window.records else ""
    )
    print(
        f"monitoring: {window.records} records of {model_name} v{model_version} ({window.labelled} with a "
        f"confirmed diagnosis) from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}{sampled}"
    )
    rate = round(window.positives / window.records, 4) if window.records else None
    return {"path": str(path), "labelled_path": str(labelled_path), "records": window.records,
            "positive_rate": rate, "labelled": window.labelled, "sampled": len(window.rows)}  # fmt: skip


@task(name="live-performance")
def measure_performance(
    current_csv: str,
    champion: dict[str, float],
    config: dict[str, Any],
    sites: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The served model on the window's confirmed diagnoses, against the champion's test metrics and
    each calibrated site's target sensitivity (``sites``)."""
    empty = Path(current_csv).stat().st_size <= 1
    records = pd.DataFrame() if empty else pd.read_csv(current_csv, dtype={"site": "string"})  # "01" stays
    performance = live_performance(records, champion, config, sites=sites)
    print(f"monitoring: {describe(performance)}")
    return performance


@task(name="load-reference", **SERVICE_TASK)
@until_reachable("downloading the champion's reference")
def load_reference(model_name: str, alias: str, workdir: str) -> dict[str, Any]:
    """Download the reference table of the version behind ``alias``.

    Returns:
        ``path`` of the table, ``version``, ``recipe``: the deployment parameters that retrain
        that version (None for versions that do not record how they were made), ``metrics``:
        its test metrics, and ``sites``: the target sensitivity of each site calibrated on it.
    """
    version = alias_version(model_name, alias)
    if version is None:
        raise LookupError(f"{model_name} has no @{alias} version: nothing to compare production with")
    path = mlflow.artifacts.download_artifacts(
        f"runs:/{version.run_id}/{REFERENCE_ARTIFACT}", dst_path=workdir
    )
    spec = VersionSpec.of(version)
    sites = {name: site.target_sensitivity for name, site in spec.sites.items()}
    return {"path": path, "version": str(version.version), "recipe": spec.recipe, "metrics": spec.metrics,
            "sites": sites}  # fmt: skip


@task(name="retraining-parameters", **SERVICE_TASK)
@until_reachable("looking for confirmed images to retrain on")
def retraining_parameters(recipe: Recipe | None, feedback_uri: str) -> dict[str, Any]:
    """The training deployment's parameters for a retraining started by monitoring.

    The champion's recipe (its sources, profile and overrides) with ``trigger: drift``, and the
    feedback prefix as a further source once it holds confirmed images: retrained on the same data
    alone, a model would come out the same.
    """
    if recipe is None:
        return {"trigger": "drift"}  # a champion that records no recipe: the deployment's defaults
    parameters = recipe.deployment_parameters("drift")
    try:
        has_feedback = next(iter(list_objects(s3_client(), feedback_uri)), None) is not None
    except (ClientError, ValueError) as error:  # a missing bucket, no access, a malformed URI
        print(f"warning: the feedback prefix {feedback_uri} cannot be read ({error}): retraining without it")
        has_feedback = False
    if has_feedback:
        parameters["source"] = join_sources([*split_sources(recipe.source), feedback_uri])
    return parameters


@task(name="drift-report")
def run_report(
    reference_csv: str, current_csv: str, workdir: str, drift_threshold: float
) -> tuple[str, dict[str, Any]]:
    """Run the Evidently report at the project's drift threshold; returns the HTML path and the summary."""
    snapshot, summary = drift_report(pd.read_csv(reference_csv), pd.read_csv(current_csv), drift_threshold)
    html = Path(workdir) / "report.html"
    snapshot.save_html(str(html))
    return str(html), summary


@task(name="save-report", **SERVICE_TASK)
@until_reachable("saving the drift report to S3")
def save_report(
    html: str | None, summary: dict[str, Any], when: datetime, headline: list[str]
) -> dict[str, str]:
    """Upload the HTML report (``headline`` on top: the decision) and the JSON summary, by date."""
    settings = Settings.from_env()
    client = s3_client(settings)
    stem = f"{when:%Y/%m/%d}/monitoring-{when:%H%M%S}"
    uris = {}
    if html is not None:
        body = with_headline(Path(html).read_text(encoding="utf-8"), headline).encode()
        key = f"{stem}.html"
        client.put_object(Bucket=settings.reports_bucket, Key=key, Body=body, ContentType="text/html")
        uris["html"] = f"s3://{settings.reports_bucket}/{stem}.html"
    body = json.dumps({**summary, "report_uris": uris}, indent=2, default=str).encode()
    client.put_object(
        Bucket=settings.reports_bucket, Key=f"{stem}.json", Body=body, ContentType="application/json"
    )
    uris["json"] = f"s3://{settings.reports_bucket}/{stem}.json"
    print(f"monitoring: report saved to {uris}")
    return uris


def with_headline(html: str, lines: list[str]) -> str:
    """The Evidently page with the decision on top, where the weekly reviewer starts reading."""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines[1:])
    banner = (
        '<div style="font-family:sans-serif;border:2px solid #444;padding:12px;margin:12px">'
        f"<h2>{escape(lines[0])}</h2><ul>{items}</ul></div>"
    )
    head, separator, rest = html.partition("<body>")
    return f"{head}<body>{banner}{rest}" if separator else banner + html


def scratch_dir() -> str:
    """A private folder for one monitoring run's files."""
    return tempfile.mkdtemp(prefix="pneumo-monitoring-")
