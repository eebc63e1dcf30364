"""The weekly reviewer's view: one row per monitoring report, newest first, and the trend.

Each row is read from the report's JSON summary in the reports bucket: window, model version,
records, drift share against the threshold, the top drifted features, the positive rate, live
performance on confirmed diagnoses, the decision, and the state of the retraining it started or
waited for (asked of Prefect now, or as recorded when Prefect does not answer).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from flask import Blueprint, Response, abort, current_app, render_template, request

from pneumo.config import Settings
from pneumo.monitoring.records import recent_operator_events
from pneumo.monitoring.wording import describe_site
from pneumo.serving.auth import require_token
from pneumo.serving.trend import trend_svg
from pneumo.storage import s3_client

bp = Blueprint("reports", __name__)
REPORT_KEY = re.compile(r"\d{4}/\d{2}/\d{2}/monitoring-\d{6}\.(html|json)")  # as save_report names them
KINDS = {".html": "text/html; charset=utf-8", ".json": "application/json"}
ROWS = 26  # reports summarised on the page (half a year of weekly reviews)
TREND = 12  # reports in the trend chart
PREFECT_BUDGET_S = 4.0  # asking Prefect for the retrainings' states: at most this long per page
S3_TIMEOUT_S = 3.0  # reading one summary, one attempt


def list_reports(settings: Settings) -> list[dict[str, str]]:
    """One entry per monitoring run: its date, and the keys of its HTML report and JSON summary."""
    client = s3_client(settings, read_timeout=S3_TIMEOUT_S, attempts=1)
    reports: dict[str, dict[str, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.reports_bucket):
        for obj in page.get("Contents", []):
            stem, _, suffix = obj["Key"].rpartition(".")
            entry = reports.setdefault(stem, {"name": stem, "modified": obj["LastModified"].isoformat()})
            entry[suffix] = obj["Key"]
    return sorted(reports.values(), key=lambda r: r["name"], reverse=True)


def report_row(entry: dict[str, str], summary: dict[str, Any]) -> dict[str, Any]:
    """What the reviewer reads of one report, from its JSON summary."""
    performance = summary.get("performance") or {}
    stem = entry["name"]
    return {
        **entry,
        "date": f"{stem[:10].replace('/', '-')} {stem[-6:-4]}:{stem[-4:-2]}",
        "window": summary.get("window"),
        "model_version": summary.get("reference_version"),
        "records": summary.get("records"),
        "drift_share": summary.get("drift_share"),
        "drift_threshold": summary.get("drift_threshold"),
        "top_drifted": (summary.get("drifted_columns") or [])[:3],
        "drifted": len(summary.get("drifted_columns") or []),
        "positive_rate": summary.get("positive_rate"),
        "labelled": performance.get("labelled"),
        "live_auc": performance.get("auc"),
        "live_sensitivity": performance.get("sensitivity"),
        "live_specificity": performance.get("specificity"),
        "degraded": performance.get("degraded"),
        "sites": _sites(performance),
        "decision": summary.get("decision", "?"),
        "reason": summary.get("reason", ""),
        "retraining": _retraining(summary),
    }


def _sites(performance: dict[str, Any]) -> list[dict[str, Any]]:
    """Each calibrated site's check (:func:`pneumo.monitoring.performance.site_checks`) for the page."""
    rows = []
    for check in performance.get("sites") or []:
        try:
            short = {True: "meets its target", False: "below its target", None: "too few cases to judge"}
            rows.append({"site": check["site"], "meets": check["meets"], "short": short[check["meets"]],
                         "text": describe_site(check)})  # fmt: skip
        except (KeyError, TypeError, ValueError):  # a summary of another release: leave it out
            continue
    return rows


def _retraining(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The retraining a report started, or the one it waited for."""
    run = summary.get("retraining") or summary.get("waiting_for")
    if not isinstance(run, dict) or not {"name", "flow_run", "state_name"} <= run.keys():
        return None
    return {"name": run["name"], "flow_run": run["flow_run"], "state": run["state_name"],
            "started": "retraining" in summary}  # fmt: skip


def _read_summary(client: Any, bucket: str, key: str) -> dict[str, Any]:
    try:
        summary = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as error:  # one unreadable summary must not hide the others
        return {"decision": "unreadable", "reason": f"{type(error).__name__}: {error}"}
    return summary if isinstance(summary, dict) else {"decision": "unreadable", "reason": "not a JSON object"}


def _current(settings: Settings, run: dict[str, Any], deadline: float) -> dict[str, Any]:
    """The retraining's name and state now (Prefect's REST API), or as recorded once ``deadline``
    (monotonic) has passed: a slow Prefect never makes the page slow.

    A run gets its descriptive name when it starts, after the report recorded the generated one.
    """
    if time.monotonic() > deadline:
        return {**run, "state": f"{run['state']} (as recorded)"}
    try:
        answer = requests.get(f"{settings.prefect_api_url}/flow_runs/{run['flow_run']}", timeout=2)
        answer.raise_for_status()
        body = answer.json()
        return {**run, "name": body["name"], "state": body["state"]["name"]}
    except (requests.RequestException, KeyError, TypeError, ValueError):
        return {**run, "state": f"{run['state']} (as recorded)"}


def summarised(settings: Settings, limit: int = ROWS) -> list[dict[str, Any]]:
    """The newest ``limit`` reports as rows, newest first. Their summaries are read at once, each
    with a short timeout and one attempt: a slow S3 costs the page seconds, not minutes, and holds
    one request thread."""
    client = s3_client(settings, read_timeout=S3_TIMEOUT_S, attempts=1)
    entries = list_reports(settings)[:limit]

    def summary(entry: dict[str, str]) -> dict[str, Any]:
        return _read_summary(client, settings.reports_bucket, entry["json"]) if "json" in entry else {}

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="reports") as pool:
        summaries = list(pool.map(summary, entries))
    rows, deadline = [], time.monotonic() + PREFECT_BUDGET_S
    for entry, read in zip(entries, summaries, strict=True):
        row = report_row(entry, read)
        if row["retraining"]:
            row["retraining"] = _current(settings, row["retraining"], deadline)
        rows.append(row)
    return rows


@bp.get("/reports")
@require_token("API_TOKEN")
def index():
    """The reports newest first, with the trend chart (``?format=json`` for a machine)."""
    settings = Settings.from_env()
    try:
        rows = summarised(settings)
    except Exception as error:  # S3 down or bucket missing: say so, do not fail
        abort(503, f"the reports bucket cannot be read: {error}")
    if request.args.get("format") == "json":
        return {"events": operator_events(), "reports": rows}
    events = operator_events()
    trend = list(reversed(rows[:TREND]))
    threshold = next((row["drift_threshold"] for row in rows if row["drift_threshold"] is not None), None)
    svg = trend_svg(trend, threshold) if trend else None
    return render_template("reports.html", reports=rows, trend_svg=svg, events=events)


def operator_events(limit: int = 10) -> list[dict[str, Any]] | None:
    """The newest operator events (failed runs, promotions, rollbacks); None when unreadable."""
    try:
        events = recent_operator_events(current_app.extensions["pneumo.records_db"].engine, limit)
    except Exception as error:  # the page still shows the reports
        current_app.logger.warning("operator events unreadable: %s", error)
        return None
    return [
        {"id": e["id"], "event": e["event"], "name": e["name"], "message": e["message"],
         "received_at": e["received_at"].isoformat(timespec="seconds")}
        for e in events
    ]  # fmt: skip


@bp.get("/reports/<path:key>")
@require_token("API_TOKEN")
def show(key: str):
    """One report (HTML) or summary (JSON), streamed from S3."""
    if not REPORT_KEY.fullmatch(key):
        abort(404, "not a report name: reports are YYYY/MM/DD/monitoring-HHMMSS.html (or .json)")
    settings = Settings.from_env()
    client = s3_client(settings, read_timeout=S3_TIMEOUT_S, attempts=1)
    try:
        body = client.get_object(Bucket=settings.reports_bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        abort(404, f"no report {key}")
    except Exception as error:  # S3 down: say so
        abort(503, f"the reports bucket cannot be read: {error}")
    suffix = "." + key.rpartition(".")[2]
    return Response(body, content_type=KINDS[suffix])
