"""The ``training`` flow: ingest -> version -> preprocess -> train -> threshold -> evaluate
(+ monitoring reference) -> register -> gate -> promote.

This file is the one place the step order is written: the DVC stages (``pneumo stage``) call
:func:`train_and_evaluate` and :func:`gate_and_promote` from here. Parameters are checked before
any work, and the whole run holds the model's one training slot
(:func:`pneumo.orchestration.training_slot`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, task
from prefect.runtime import flow_run

from pneumo.config import DEFAULT_PROFILE, DEMO_PROFILE, DEMO_SOURCE, Settings, load_params, workdir
from pneumo.contract import CHAMPION, INT8_ARTIFACT, TRIGGERS, Recipe
from pneumo.flows.preprocess_flow import preprocess
from pneumo.models import alias_version
from pneumo.orchestration import training_slot
from pneumo.services import SERVICE_TASK, ServiceUnavailable, http_ok, until_reachable
from pneumo.storage import s3_client, split_sources, split_uri
from pneumo.tasks.evaluate import evaluate
from pneumo.tasks.gate import compare_with_champion, decide
from pneumo.tasks.gate_report import publish_gate
from pneumo.tasks.ingest import SourceError, ingest, version_data
from pneumo.tasks.reference import build_reference
from pneumo.tasks.registry import ChampionMoved, promote, record_gate, register, repair_registry
from pneumo.tasks.threshold import cross_validated_threshold
from pneumo.tasks.train import train

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
    try:
        buckets = {split_uri(uri)[0] for uri in split_sources(source)}
    except ValueError as error:
        raise SourceError(str(error)) from error
    for bucket in sorted(buckets):
        try:
            s3_client(settings).head_bucket(Bucket=bucket)
        except Exception as error:
            raise SourceError(
                f"S3 bucket {bucket!r} at {settings.s3_endpoint} is not reachable: {error}"
            ) from error


@task(name="resolve-recipe", **SERVICE_TASK)
@until_reachable("reading the champion's recipe")
def resolve_recipe(
    source: str | None, profile: str | None, overrides: dict[str, Any] | None, trigger: str
) -> Recipe:
    """What to train: the given source, or else the champion's recipe, or else the demo's.

    A run without a source (the deployment's schedule, or a run started in the Prefect UI)
    retrains what is in production, on that data source's current content; only a model with no
    champion falls back to the synthetic demo.
    """
    if source is not None:
        return Recipe(source, profile or DEFAULT_PROFILE, overrides or {}, trigger)
    name = load_params(profile or DEFAULT_PROFILE, overrides)["registry"]["model_name"]
    champion = alias_version(name, CHAMPION)
    recipe = Recipe.from_tags(champion.tags) if champion is not None else None
    if recipe is None:
        print(f"{name} has no champion that records its recipe: training the demo recipe")
        return Recipe(DEMO_SOURCE, profile or DEMO_PROFILE, overrides or {}, trigger)
    print(f"retraining champion v{champion.version}'s recipe: {recipe.source}, profile {recipe.profile}")
    chosen = recipe.overrides if overrides is None else overrides
    return Recipe(recipe.source, profile or recipe.profile, chosen, trigger)


def run_name() -> str:
    """The run's name in the Prefect UI: what it trains, on which data, who started it, and when."""
    parameters = flow_run.get_parameters() or {}
    source = parameters.get("source")
    data = (
        " + ".join("/".join(filter(None, split_uri(uri))) for uri in split_sources(source))
        if source
        else ("the champion's data")
    )
    profile = parameters.get("profile") or (DEFAULT_PROFILE if source else "the champion's recipe")
    trigger = parameters.get("trigger") or "deployment"
    return f"train {profile} on {data} ({trigger}) {datetime.now(UTC):%Y-%m-%d %H:%M}"


@flow(name="training", flow_run_name=run_name, log_prints=True)
def training(
    source: str | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    trigger: str = "deployment",
) -> dict[str, Any]:
    """Train a candidate and promote it if it passes the gate.

    Args:
        source: ``s3://bucket/prefix`` holding an NIH-layout or class-folder data set; default:
            the champion's data source (:func:`resolve_recipe`).
        profile: a profile of params.yaml; default: the champion's (``default`` with a source).
        overrides: nested parameter values that win over the profile; default: the champion's.
        trigger: who started the run: ``operator`` (``pneumo train``), ``deployment`` (a schedule
            or the Prefect UI) or ``drift`` (monitoring). Only an operator's training on a new
            data source may be judged on its own test split alone (:mod:`pneumo.tasks.gate`).

    Returns:
        ``model_uri``, ``version``, ``promoted``, the gate's reasons, the test metrics, and the
        ``flow_run_id`` (its page in the Prefect UI holds the ``training-gate`` artifact).
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, not {trigger!r}")
    load_params(profile or DEFAULT_PROFILE, overrides)  # wrong parameters stop the run before any work
    recipe = resolve_recipe(source, profile, overrides, trigger)
    params = load_params(recipe.profile, recipe.overrides)
    check_services(recipe.source)
    with training_slot(params["registry"]["model_name"]):
        raw_dir = ingest(recipe.source)
        data_version = version_data(raw_dir)
        processed = preprocess(raw_dir, params, data_version)
        run, results = train_and_evaluate(processed, params, data_version, recipe.source)
        data = {"data_version": data_version, "data_path": Path(raw_dir).relative_to(workdir()).as_posix()}
        outcome = gate_and_promote(processed, run, results, params, data, recipe)
    return {**outcome, "profile": recipe.profile, "trigger": trigger, "flow_run_id": flow_run.get_id()}


def train_and_evaluate(
    processed: str, params: dict[str, Any], data_version: str, source: str
) -> tuple[dict[str, str], dict[str, float]]:
    """Train, choose the threshold, evaluate on the test split, and store the monitoring reference.

    Returns:
        The training run (``run_id``, ``model_uri``) and the evaluation's results.
    """
    run = train(processed, params, data_version, source)
    folds = params["gate"]["threshold_folds"]
    cross_validated = cross_validated_threshold(processed, params) if folds else None
    results = evaluate(run["run_id"], run["model_uri"], processed, params, cross_validated)
    served = INT8_ARTIFACT if results.get("int8_served") else None  # the float graph is Keras's numbers
    build_reference(run["run_id"], run["model_uri"], processed, params, served)
    return run, results


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
    repair_registry(name)  # a promotion a killed run left half done is finished first
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
    try:  # the decision is made and recorded in MLflow: its Prefect artifact must not fail the run
        publish_gate(name, version, decision, results, comparison, run["run_id"])
    except Exception as error:
        print(f"warning: the training-gate artifact was not published: {error}")
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
