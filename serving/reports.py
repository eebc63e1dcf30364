"""The weekly reviewer's view: drift reports from the reports bucket, newest first."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, render_template, request

from pneumo.config import Settings
from pneumo.storage import s3_client

bp = Blueprint("reports", __name__)
REPORT_KEY = re.compile(r"\d{4}/\d{2}/\d{2}/monitoring-\d{6}\.(html|json)")  # as save_report names them
KINDS = {".html": "text/html; charset=utf-8", ".json": "application/json"}


def list_reports(settings: Settings) -> list[dict[str, str]]:
    """One entry per monitoring run: its date, and the keys of its HTML report and JSON summary."""
    client = s3_client(settings)
    reports: dict[str, dict[str, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.reports_bucket):
        for obj in page.get("Contents", []):
            stem, _, suffix = obj["Key"].rpartition(".")
            entry = reports.setdefault(stem, {"name": stem, "modified": obj["LastModified"].isoformat()})
            entry[suffix] = obj["Key"]
    return sorted(reports.values(), key=lambda r: r["name"], reverse=True)


@bp.get("/reports")
def index():
    """Reports newest first, with links that open the HTML (``?format=json`` for a machine)."""
    try:
        reports = list_reports(Settings.from_env())
    except Exception as error:  # S3 down or bucket missing: say so, do not fail
        abort(503, f"the reports bucket cannot be read: {error}")
    if request.args.get("format") == "json":
        return {"reports": reports}
    return render_template("reports.html", reports=reports)


@bp.get("/reports/<path:key>")
def show(key: str):
    """One report (HTML) or summary (JSON), streamed from S3."""
    if not REPORT_KEY.fullmatch(key):
        abort(404, "not a report name: reports are YYYY/MM/DD/monitoring-HHMMSS.html (or .json)")
    settings = Settings.from_env()
    client = s3_client(settings)
    try:
        body = client.get_object(Bucket=settings.reports_bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        abort(404, f"no report {key}")
    except Exception as error:  # S3 down: say so
        abort(503, f"the reports bucket cannot be read: {error}")
    suffix = "." + key.rpartition(".")[2]
    return Response(body, content_type=KINDS[suffix])
