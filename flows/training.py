"""The ``training`` flow: ingest -> version -> preprocess -> train -> evaluate (+ monitoring
reference) -> gate -> promote."""

from __future__ import annotations

from typing import Any

import mlflow
from prefect import flow, task

from pneumo.config import Settings, load_params
from pneumo.stack import http_ok
from pneumo.storage import s3_client, split_uri
from tasks.evaluate import evaluate
from tasks.ingest import SourceError, ingest, version_data
from tasks.preprocess import preprocess
from tasks.reference import build_reference
from tasks.registry import decide, evaluate_champion, promote, record_gate, register
from tasks.threshold import check_threshold_params, cross_validated_threshold
from tasks.train import train


class ServiceUnavailable(RuntimeError):
    """A service the flow needs does not answer; the message says which and what to do."""


@task(name="check-services", retries=2, retry_delay_seconds=3)
def check_services(source: str) -> None:
    """Fail fast, before any work, when S3 or MLflow cannot be reached."""
    settings = Settings.from_env()
    tracking = mlflow.get_tracking_uri()
    if tracking.startswith("http") and not http_ok(f"{tracking.rstrip('/')}/health", timeout=5):
        raise ServiceUnavailable(
            f"MLflow tracking server {tracking} is not reachable: start the stack (pneumo stack up) "
            "or point MLFLOW_TRACKING_URI at a running server"
        )
    bucket, _ = split_uri(source)
    try:
        s3_client(settings).head_bucket(Bucket=bucket)
    except Exception as error:
        raise SourceError(
            f"S3 bucket {bucket!r} at {settings.s3_endpoint} is not reachable: {error}"
        ) from error


@flow(name="training", log_prints=True)
def training(source: str = "s3://pneumo-raw/synthetic", profile: str = "default",
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train a candidate on ``source`` and promote it if it passes the gate.

    Args:
        source: ``s3://bucket/prefix`` holding an NIH-layout or class-folder data set.
        profile: a profile of params.yaml.
        overrides: nested parameter values that win over the profile.

    Returns:
        ``model_uri``, ``version``, ``promoted``, the gate's reasons, and the test metrics.
    """
    params = load_params(profile, overrides)
    check_threshold_params(params)
    check_services(source)
    raw_dir = ingest(source)
    data_version = version_data(raw_dir)
    processed = preprocess(raw_dir, params, data_version)
    run = train(processed, params, data_version, source)
    cross_validated = (
        cross_validated_threshold(processed, params) if params["gate"]["threshold_folds"] else None
    )
    results = evaluate(run["run_id"], run["model_uri"], processed, params, cross_validated)
    build_reference(run["run_id"], run["model_uri"], processed, params)
    return {**gate_and_promote(processed, run, results, params, data_version), "profile": profile}


def gate_and_promote(
    processed: str, run: dict[str, str], results: dict[str, float], params: dict[str, Any], data_version: str
) -> dict[str, Any]:
    """Register the candidate, compare it with the champion on the same test split, promote if it passes."""
    name = params["registry"]["model_name"]
    champion = evaluate_champion(processed, params)
    version = register(run["model_uri"], run["run_id"], results, params, data_version)
    decision = decide(results, champion, params["gate"])
    record_gate(name, version, decision)
    if decision.promote:
        promote(name, version, "; ".join(decision.reasons))
    else:
        print("gate refused the candidate: " + "; ".join(decision.reasons))
    return {
        "model_uri": f"models:/{name}/{version}",
        "version": version,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "run_id": run["run_id"],
        "data_version": data_version,
        "champion_before": champion["version"] if champion else None,
        **results,
    }
