"""The ``training`` flow: ingest -> version -> preprocess -> train -> evaluate (+ monitoring
reference) -> register -> gate -> promote.

This file is the one place the step order is written. Parameters are checked before any work, and
the whole run holds the model's one training slot (:func:`pneumo.orchestration.training_slot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, task

from pneumo.config import DEMO_SOURCE, Settings, load_params, workdir
from pneumo.contract import TRIGGERS, Recipe
from pneumo.orchestration import training_slot
from pneumo.services import ServiceUnavailable
from pneumo.stack import http_ok
from pneumo.storage import s3_client, split_uri
from tasks.evaluate import evaluate
from tasks.gate import compare_with_champion, decide
from tasks.ingest import SourceError, ingest, version_data
from tasks.preprocess import preprocess
from tasks.reference import build_reference
from tasks.registry import ChampionMoved, promote, record_gate, register
from tasks.threshold import cross_validated_threshold
from tasks.train import train

GATE_ATTEMPTS = 3  # the champion moved while gating: gate again, at most this often


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
def training(
    source: str = DEMO_SOURCE,
    profile: str = "default",
    overrides: dict[str, Any] | None = None,
    trigger: str = "deployment",
) -> dict[str, Any]:
    """Train a candidate on ``source`` and promote it if it passes the gate.

    Args:
        source: ``s3://bucket/prefix`` holding an NIH-layout or class-folder data set.
        profile: a profile of params.yaml.
        overrides: nested parameter values that win over the profile.
        trigger: who started the run: ``operator`` (``pneumo train``), ``deployment`` (a schedule
            or the Prefect UI) or ``drift`` (monitoring). Only an operator's training on a new
            data source may be judged on its own test split alone (:mod:`tasks.gate`).

    Returns:
        ``model_uri``, ``version``, ``promoted``, the gate's reasons, and the test metrics.
    """
    params = load_params(profile, overrides)
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    recipe = Recipe(source, profile, overrides or {}, trigger)
    check_services(source)
    with training_slot(params["registry"]["model_name"]):
        raw_dir = ingest(source)
        data_version = version_data(raw_dir)
        processed = preprocess(raw_dir, params, data_version)
        run = train(processed, params, data_version, source)
        cross_validated = (
            cross_validated_threshold(processed, params) if params["gate"]["threshold_folds"] else None
        )
        results = evaluate(run["run_id"], run["model_uri"], processed, params, cross_validated)
        build_reference(run["run_id"], run["model_uri"], processed, params)
        data = {"data_version": data_version, "data_path": Path(raw_dir).relative_to(workdir()).as_posix()}
        outcome = gate_and_promote(processed, run, results, params, data, recipe)
    return {**outcome, "profile": profile, "trigger": trigger}


def gate_and_promote(
    processed: str,
    run: dict[str, str],
    results: dict[str, float],
    params: dict[str, Any],
    data: dict[str, str],
    recipe: Recipe,
) -> dict[str, Any]:
    """Register the candidate, gate it against the champion, promote it if it passes.

    When the champion moves while the gate compares (another promotion or a rollback), the
    promotion is refused by compare-and-set and the candidate is gated again against the new one.
    """
    name = params["registry"]["model_name"]
    version = register(run["model_uri"], run["run_id"], results, params, data, recipe)
    for attempt in range(1, GATE_ATTEMPTS + 1):
        comparison = compare_with_champion(run["model_uri"], processed, params, recipe)
        decision = decide(results, comparison, params["gate"])
        record_gate(name, version, decision)
        if not decision.promote:
            print("gate refused the candidate: " + "; ".join(decision.reasons))
            break
        try:
            promote(name, version, "; ".join(decision.reasons), decision.champion)
            break
        except ChampionMoved as moved:
            if attempt == GATE_ATTEMPTS:
                raise
            print(f"{moved} (attempt {attempt} of {GATE_ATTEMPTS})")
    return {
        "model_uri": f"models:/{name}/{version}",
        "version": version,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "judged_on": decision.judged_on,
        "run_id": run["run_id"],
        "data_version": data["data_version"],
        "data_source": recipe.source,
        "champion_before": decision.champion,
        **results,
    }
