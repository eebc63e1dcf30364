"""Monitoring tasks: production records, the champion's reference, the report, the decision."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.deployments import run_deployment

from monitoring.drift import drift_report
from monitoring.features import REFERENCE_ARTIFACT
from pneumo.config import Settings
from pneumo.models import alias_version
from pneumo.storage import s3_client
from serving.records import read_records

RETRAIN_TAG = "drift-retraining"


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
    records_url: str, start: datetime, end: datetime, workdir: str, model_name: str, model_version: str
) -> tuple[str, int]:
    """Write the window's predictions by one model version to a CSV; returns its path and row count.

    Only that version's rows are comparable with its reference: another version's probabilities and
    embeddings (its own PCA) live on other scales.
    """
    rows = read_records(records_url, start, end, model_name, model_version)
    path = Path(workdir) / "current.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    print(
        f"monitoring: {len(rows)} records of {model_name} v{model_version} "
        f"from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"
    )
    return str(path), len(rows)


@task(name="load-reference", retries=2, retry_delay_seconds=5)
def load_reference(model_name: str, alias: str, workdir: str) -> tuple[str, str]:
    """Download the reference table of the version behind ``alias``; returns (path, version)."""
    version = alias_version(model_name, alias)
    if version is None:
        raise LookupError(f"{model_name} has no @{alias} version: nothing to compare production with")
    path = mlflow.artifacts.download_artifacts(
        f"runs:/{version.run_id}/{REFERENCE_ARTIFACT}", dst_path=workdir
    )
    return path, str(version.version)


@task(name="drift-report")
def run_report(reference_csv: str, current_csv: str, workdir: str) -> tuple[str, dict[str, Any]]:
    """Run the Evidently report; returns the HTML path and the summary."""
    snapshot, summary = drift_report(pd.read_csv(reference_csv), pd.read_csv(current_csv))
    html = Path(workdir) / "report.html"
    snapshot.save_html(str(html))
    return str(html), summary


@task(name="save-report", retries=3, retry_delay_seconds=5)
def save_report(html: str | None, summary: dict[str, Any], when: datetime) -> dict[str, str]:
    """Upload the HTML report and the JSON summary to the reports bucket, by date."""
    settings = Settings.from_env()
    client = s3_client(settings)
    stem = f"{when:%Y/%m/%d}/monitoring-{when:%H%M%S}"
    uris = {}
    if html is not None:
        client.upload_file(
            html, settings.reports_bucket, f"{stem}.html", ExtraArgs={"ContentType": "text/html"}
        )
        uris["html"] = f"s3://{settings.reports_bucket}/{stem}.html"
    body = json.dumps({**summary, "report_uris": uris}, indent=2, default=str).encode()
    client.put_object(
        Bucket=settings.reports_bucket, Key=f"{stem}.json", Body=body, ContentType="application/json"
    )
    uris["json"] = f"s3://{settings.reports_bucket}/{stem}.json"
    print(f"monitoring: report saved to {uris}")
    return uris


def recent_retraining(deployment: str, hours: float) -> list[str]:
    """Names of drift-triggered runs of ``deployment`` created in the last ``hours``."""
    flow_name, _, deployment_name = deployment.partition("/")
    since = datetime.now(UTC) - timedelta(hours=hours)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[RETRAIN_TAG])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
        )
    return [run.name for run in runs if run.created and run.created >= since]


@task(name="decide-retraining", retries=2, retry_delay_seconds=5)
def decide_and_trigger(
    summary: dict[str, Any], config: dict[str, Any], allow_trigger: bool
) -> dict[str, Any]:
    """Start the training deployment when drift passes the threshold, unless within the cooldown."""
    share, threshold = summary["drift_share"], config["drift_threshold"]
    if share <= threshold:
        return {"decision": "no drift", "reason": f"drift share {share:.2f} <= threshold {threshold}"}
    recent = recent_retraining(config["training_deployment"], config["cooldown_hours"])
    if recent:
        return {
            "decision": "cooldown",
            "reason": f"drift share {share:.2f} > {threshold}, but retraining {recent[0]} started within "
            f"the last {config['cooldown_hours']} h",
        }
    reason = f"drift share {share:.2f} > threshold {threshold}: {', '.join(summary['drifted_columns'])}"
    if not allow_trigger:
        return {"decision": "drift (retraining not triggered)", "reason": reason}
    run = run_deployment(
        config["training_deployment"],
        timeout=0,
        as_subflow=False,
        tags=[RETRAIN_TAG, f"drift-share-{share:.2f}"],
    )
    print(f"monitoring: started {config['training_deployment']} as flow run {run.name} ({reason})")
    return {"decision": "retrain", "reason": reason, "training_flow_run": str(run.id)}


def scratch_dir() -> str:
    """A private folder for one monitoring run's files."""
    return tempfile.mkdtemp(prefix="pneumo-monitoring-")
