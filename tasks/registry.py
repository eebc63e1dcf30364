"""Registry: register candidates, gate them against the champion, move aliases, roll back.

Aliases: ``champion`` is the model in production, ``previous`` the one it replaced. Every alias
change is written to the affected versions' tags and to an audit log artifact of their runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from prefect import task

from pneumo.models import alias_version, load_keras
from tasks.evaluate import binary_metrics, predict, test_images_at
from tasks.model_card import CARD_ARTIFACT, render_card
from tasks.preprocess import load_split

CHAMPION, PREVIOUS = "champion", "previous"
AUDIT_ARTIFACT = "registry/audit.jsonl"
GATED_METRICS = ("test_auc", "test_sensitivity", "test_specificity")
TAGGED_METRICS = (*GATED_METRICS, "test_precision", "test_f1", "test_accuracy")


@dataclass
class GateDecision:
    """Whether to promote, and why."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(
    candidate: dict[str, float], champion: dict[str, Any] | None, gate: dict[str, Any]
) -> GateDecision:
    """Apply the gate: absolute minimums, then no regression beyond tolerance vs the champion.

    Args:
        candidate: the candidate's ``test_*`` metrics.
        champion: the champion's metrics on the same test split and its ``version``, or None.
        gate: the ``gate`` section of params.yaml.
    """
    failures = []
    for metric in GATED_METRICS:
        minimum = gate[f"min_{metric}"]
        if not candidate[metric] >= minimum:  # also refuses NaN
            failures.append(f"{metric} {candidate[metric]:.3f} is below the minimum {minimum}")
    if champion is not None:
        for metric, max_drop in gate["max_drop"].items():
            if not candidate[metric] >= champion[metric] - max_drop:
                failures.append(
                    f"{metric} {candidate[metric]:.3f} is worse than champion v{champion['version']} "
                    f"({champion[metric]:.3f}) by more than {max_drop}"
                )
    if failures:
        return GateDecision(False, failures)
    if champion is None:
        return GateDecision(True, ["first model: meets the absolute minimums"])
    return GateDecision(
        True, [f"meets the minimums and is not worse than champion v{champion['version']} beyond tolerance"]
    )


@task(name="evaluate-champion", retries=2, retry_delay_seconds=5)
def evaluate_champion(processed: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The champion's metrics on the candidate's test split at its own threshold (None if none)."""
    name = params["registry"]["model_name"]
    champion = alias_version(name, CHAMPION)
    if champion is None:
        print("gate: no champion yet")
        return None
    tags = champion.tags
    size, square = int(tags["image_size"]), tags.get("square", "crop")
    if size == params["data"]["image_size"] and square == params["data"]["square"]:
        x, y = load_split(processed, "test")
    else:
        x, y = test_images_at(processed, size, square)
    probabilities = predict(load_keras(f"models:/{name}/{champion.version}"), x)
    metrics = binary_metrics(y, probabilities, float(tags["threshold"]))
    print(f"gate: champion v{champion.version} on this test split: auc={metrics['auc']:.3f}")
    return {"version": champion.version, **{f"test_{k}": v for k, v in metrics.items()}}


@task(name="register", retries=2, retry_delay_seconds=5)
def register(
    model_uri: str, run_id: str, results: dict[str, float], params: dict[str, Any], data_version: str
) -> str:
    """Register the candidate as a new version, with its threshold, metrics and model card.

    A retry after a partial failure reuses the version already registered for the run.
    """
    name = params["registry"]["model_name"]
    client = mlflow.MlflowClient()
    tags = {
        "threshold": results["threshold"],
        "image_size": params["data"]["image_size"],
        "square": params["data"]["square"],
        "data_version": data_version,
        "profile": params["profile"],
        "run_id": run_id,
        **{k: round(results[k], 4) for k in TAGGED_METRICS},
    }
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        version = existing[0]
    else:
        version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    run_tags = client.get_run(run_id).data.tags
    provenance = {
        "run_id": run_id,
        "data_version": data_version,
        "data_source": run_tags.get("data_source", "?"),
        "git_commit": run_tags.get("git_commit", "unknown"),
    }
    summary = mlflow.artifacts.load_dict(f"runs:/{run_id}/data/summary.json")
    card = render_card(name, str(version.version), results, params, summary, provenance)
    client.log_text(run_id, card, CARD_ARTIFACT)
    client.update_model_version(name, version.version, description=card)
    print(f"registered {name} v{version.version} (threshold {results['threshold']:.4f}), model card logged")
    return str(version.version)


def _audit(name: str, version: str, event: str, reason: str, **details: Any) -> None:
    """Append an event to the audit log artifact of the version's run and tag the version."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"event": event, "at": at, "model": name, "version": str(version), "reason": reason, **details}
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    try:
        log = mlflow.artifacts.load_text(f"runs:/{run_id}/{AUDIT_ARTIFACT}")
    except (MlflowException, OSError):  # no log yet
        log = ""
    client.log_text(run_id, log + json.dumps(record) + "\n", AUDIT_ARTIFACT)
    client.set_model_version_tag(name, version, f"{event}_at", at)
    client.set_model_version_tag(name, version, f"{event}_reason", reason)


@task(name="record-gate", retries=2, retry_delay_seconds=5)
def record_gate(name: str, version: str, decision: GateDecision) -> None:
    """Tag the version with the gate's verdict and reasons."""
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, version, "gate", "passed" if decision.promote else "refused")
    client.set_model_version_tag(name, version, "gate_reasons", "; ".join(decision.reasons))


@task(name="promote", retries=2, retry_delay_seconds=5)
def promote(name: str, version: str, reason: str) -> None:
    """Move ``champion`` to ``version``; the old champion becomes ``previous``."""
    client = mlflow.MlflowClient()
    old = alias_version(name, CHAMPION)
    _audit(name, version, "promoted", reason, alias=CHAMPION, replaced=old.version if old else None)
    if old is not None and str(old.version) != version:
        _audit(name, old.version, "demoted", f"replaced by v{version}", alias=PREVIOUS)
        client.set_registered_model_alias(name, PREVIOUS, old.version)
    # The champion alias moves last, in one call: if anything before fails, production is untouched.
    client.set_registered_model_alias(name, CHAMPION, version)
    print(f"promoted {name} v{version} to @{CHAMPION}" + (f" (v{old.version} is @{PREVIOUS})" if old else ""))


def rollback(name: str, reason: str) -> dict[str, str]:
    """Put ``previous`` back as ``champion``; the rolled-back version loses both aliases.

    Raises:
        LookupError: there is no ``previous`` version to roll back to.
    """
    client = mlflow.MlflowClient()
    previous, current = alias_version(name, PREVIOUS), alias_version(name, CHAMPION)
    if previous is None:
        raise LookupError(f"{name} has no @{PREVIOUS} version to roll back to")
    _audit(name, previous.version, "restored", reason, alias=CHAMPION)
    if current is not None:
        _audit(name, current.version, "rolled_back", reason, alias=None)
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.delete_registered_model_alias(name, PREVIOUS)
    return {"champion": str(previous.version), "rolled_back": str(current.version) if current else ""}
