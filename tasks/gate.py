"""The gate: a candidate is promoted only if it is good enough, and not worse than the champion on
the same images.

Candidate and champion are scored on the candidate's test split and on the champion's own test
split (restored from DVC by the data version recorded with the champion); each split leaves out
every image, and on the same source every patient, that the other model trained on. On each split
they are compared at a matched operating point, specificity at the target sensitivity with each
model's threshold set on those images, and by AUC, with 95% intervals from a paired bootstrap over
patients (:func:`pneumo.metrics.paired_comparison`).
Sensitivity at each model's own stored threshold is never compared: a model that calls nearly
everything positive would win it.

The one exception: an operator's own training on a new data source (for example moving from the
synthetic demo to real X-rays) is judged on the candidate's test split only, and the decision says
so. A retraining started by monitoring, or by the deployment's schedule, never is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import task

from pneumo.contract import CHAMPION, PARAMS_ARTIFACT, ContractError, GateDecision, Recipe, VersionSpec
from pneumo.images import load_prepared
from pneumo.metrics import COMPARED_LABELS as LABELS
from pneumo.metrics import paired_comparison
from pneumo.models import alias_version, load_keras
from pneumo.network import predict
from pneumo.processed import build_processed, split_rows
from pneumo.services import SERVICE_TASK, until_reachable
from pneumo.storage import split_sources
from pneumo.versioning import DvcError, restore_data

MINIMUMS = ("test_auc", "test_sensitivity", "test_specificity")
OWN_SPLIT, CHAMPION_SPLIT = "candidate's test split", "champion's test split"


def decide(candidate: dict[str, float], comparison: dict[str, Any], gate: dict[str, Any]) -> GateDecision:
    """Apply the gate.

    Args:
        candidate: the candidate's ``test_*`` metrics on its own test split, at its own threshold.
        comparison: :func:`compare_with_champion`'s result: ``champion`` (version or None),
            ``splits`` (name -> :func:`pneumo.metrics.paired_comparison` result, or
            ``{"unavailable": reason}``) and ``exception`` (why only the candidate's split counts).
        gate: the ``gate`` section of params.yaml.
    """
    failures = []
    for metric in MINIMUMS:
        minimum = gate[f"min_{metric}"]
        if not candidate[metric] >= minimum:  # also refuses NaN
            failures.append(f"{metric} {candidate[metric]:.3f} is below the minimum {minimum}")
    champion, splits = comparison["champion"], comparison["splits"]
    for split, result in splits.items():
        if "unavailable" in result:
            failures.append(f"cannot compare on the {split}: {result['unavailable']}")
            continue
        for metric, max_drop in gate["max_drop"].items():
            ours, theirs = result["candidate"][metric], result["champion"][metric]
            low, high = result["interval"][metric]
            if not ours >= theirs - max_drop:
                failures.append(
                    f"on the {split} ({result['size']['images']} images) {LABELS[metric]} {ours:.3f} "
                    f"is worse than champion v{champion}'s {theirs:.3f} by more than {max_drop} "
                    f"(difference 95% interval {low:+.3f} to {high:+.3f})"
                )
    decision = GateDecision(False, failures, champion, splits, list(splits), comparison.get("exception"))
    if failures:
        return decision
    decision.promote = True
    if champion is None:
        decision.reasons = ["first model: meets the absolute minimums"]
        return decision
    decision.reasons = [
        f"meets the minimums and is not worse than champion v{champion} beyond tolerance on the "
        + " and the ".join(splits)
    ]
    if comparison.get("exception"):
        decision.reasons.append(comparison["exception"])
    return decision


def _digest(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


def unseen(test: pd.DataFrame, seen: pd.DataFrame, same_source: bool) -> pd.DataFrame:
    """The rows of ``test`` a model never trained on: no same file, nor (same source) patient."""
    keep = ~test["path"].map(_digest).isin({_digest(p) for p in seen["path"]})
    if same_source:
        keep &= ~test["patient_id"].astype(str).isin(set(seen["patient_id"].astype(str)))
    return test[keep]


def _trained_on(processed: str) -> pd.DataFrame:
    return pd.concat([split_rows(processed, "train"), split_rows(processed, "val")])


def _champion_data(champion: Any) -> str:
    """The champion's processed data folder (its data restored from DVC), or raise why not.

    Raises:
        LookupError: the version does not record its data or parameters, or DVC cannot restore them.
    """
    spec = VersionSpec.of(champion)
    if not spec.data_version or not spec.data_path:
        raise LookupError(f"champion v{champion.version} does not record its data version and folder")
    try:
        params = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{PARAMS_ARTIFACT}")
    except mlflow.exceptions.MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" not in str(error) and "not found" not in str(error).lower():
            raise
        raise LookupError(f"champion v{champion.version} does not record its parameters") from error
    try:
        raw = restore_data(spec.data_version, spec.data_path)
    except DvcError as error:
        raise LookupError(f"its data version {spec.data_version} cannot be restored: {error}") from error
    return build_processed(raw, params, spec.data_version)


def _without(test: pd.DataFrame, seen: pd.DataFrame, same_source: bool, whose: str) -> pd.DataFrame | str:
    """``test`` minus what the other model trained on; a reason when both classes are not left."""
    rows = unseen(test, seen, same_source)
    if rows["label"].nunique() < 2:
        return (f"only {len(rows)} of its {len(test)} test images were not in the {whose}'s training "
                "data, and they do not hold both classes")  # fmt: skip
    if len(rows) < len(test):
        print(
            f"gate: {len(test) - len(rows)} of {len(test)} test images left out: the {whose} trained on them"
        )
    return rows


def share_a_source(recipe: Recipe, other: Recipe | None) -> bool:
    """Whether two recipes read a prefix in common (their patient ids then mean the same people)."""
    return other is not None and bool(set(split_sources(recipe.source)) & set(split_sources(other.source)))


def judged_alone(recipe: Recipe, champion_recipe: Recipe | None, champion_version: str) -> str | None:
    """Why only the candidate's test split counts, or None: an operator's run on a new data source
    (one that shares no prefix with the champion's)."""
    if recipe.trigger != "operator" or share_a_source(recipe, champion_recipe):
        return None
    return (
        f"judged on the candidate's test split only: an operator's training on a new data source "
        f"({recipe.source}; champion v{champion_version} was trained on "
        f"{champion_recipe.source if champion_recipe else 'an unrecorded source'})"
    )


def _scores(model: Any, rows: pd.DataFrame, size: int, square: str) -> np.ndarray:
    return predict(model, np.stack([load_prepared(path, size, square) for path in rows["path"]]))


@task(name="compare-with-champion", **SERVICE_TASK)
@until_reachable("comparing the candidate with the champion")
def compare_with_champion(
    model_uri: str, processed: str, params: dict[str, Any], recipe: Recipe
) -> dict[str, Any]:
    """Score candidate and champion on the same images of each split the gate needs.

    Args:
        model_uri: the candidate model.
        processed: the candidate's processed data folder.
        params: the candidate's parameters.
        recipe: how the candidate was made (its source and who started the run).

    Returns:
        ``champion`` (version or None), ``splits`` (name -> paired comparison, or
        ``{"unavailable": reason}``) and ``exception`` (set when only the candidate's split counts).
    """
    name, gate = params["registry"]["model_name"], params["gate"]
    champion = alias_version(name, CHAMPION)
    if champion is None:
        print("gate: no champion yet")
        return {"champion": None, "splits": {}, "exception": None}
    champion_spec = VersionSpec.of(champion)
    if champion_spec.image_size is None:
        raise ContractError(
            f"champion v{champion.version} lacks the image_size tag: it was not registered by the flow"
        )
    champion_recipe = champion_spec.recipe
    same_source = share_a_source(recipe, champion_recipe)
    exception = judged_alone(recipe, champion_recipe, str(champion.version))
    own_test = split_rows(processed, "test")
    sets: dict[str, pd.DataFrame | str] = {OWN_SPLIT: own_test}
    if exception:
        print(f"gate: {exception}")
    else:
        # Each model is scored only on images the other did not train on, on both splits.
        try:
            champion_processed = _champion_data(champion)
        except LookupError as error:
            sets[CHAMPION_SPLIT] = str(error)
        else:
            sets[OWN_SPLIT] = _without(own_test, _trained_on(champion_processed), same_source, "champion")
            sets[CHAMPION_SPLIT] = _without(
                split_rows(champion_processed, "test"), _trained_on(processed), same_source, "candidate"
            )
    models = {
        "candidate": load_keras(model_uri),
        "champion": load_keras(f"models:/{name}/{champion.version}"),
    }
    shapes = {
        "candidate": (params["data"]["image_size"], params["data"]["square"]),
        "champion": (champion_spec.image_size, champion_spec.square),
    }
    splits: dict[str, Any] = {}
    for split, rows in sets.items():
        if isinstance(rows, str):
            splits[split] = {"unavailable": rows}
            continue
        scores = {who: _scores(models[who], rows, *shapes[who]) for who in models}
        y, patients = rows["label"].to_numpy(np.int64), rows["patient_id"].astype(str).to_numpy()
        target, resamples = gate["target_sensitivity"], gate["bootstrap_resamples"]
        result = paired_comparison(y, scores["candidate"], scores["champion"], patients, target, resamples)
        splits[split] = result
        shown = [f"{LABELS[m]} {result['candidate'][m]:.3f} vs {result['champion'][m]:.3f}" for m in LABELS]
        print(f"gate: {split}: candidate vs champion: " + ", ".join(shown))
    return {"champion": str(champion.version), "champion_threshold": champion_spec.threshold,
            "splits": splits, "exception": exception}  # fmt: skip
