"""Registry: register candidates, record the gate's decision, move aliases, roll back, audit.

Aliases (:mod:`pneumo.contract`): ``champion`` is the model in production, ``previous`` the one it
replaced. A promotion moves ``champion`` first, in one call, and ``previous`` after: if anything
fails in between, production is on a complete, passed model and a rerun repairs ``previous``.
``champion`` moves only if it still points at the version the gate compared against.

Every event (registered, gate, promoted, rolled back) is one JSON file of its own in the run of the
version it is about (``registry/audit/``), under a name no other write uses (the event, its id and
a random suffix): never overwritten, so no event is lost to a failed read or a second writer; a
retried write of one event is found by its id and not repeated. ``history`` reads them all back,
and fails loudly when it cannot.

Alias moves fail closed: without the registry lock (Prefect unreachable) nothing moves unless the
operator passes ``--force``, and the audit record says the lock was bypassed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import mlflow
from prefect import task

from pneumo.contract import (
    AUDIT_FOLDER,
    CARD_ARTIFACT,
    CHAMPION,
    GATE_ARTIFACT,
    GATE_CHAMPION_TAG,
    GATE_REASONS_TAG,
    GATE_TAG,
    INT8_ARTIFACT,
    ONNX_ARTIFACT,
    PARAMS_ARTIFACT,
    PREVIOUS,
    PROMOTION_BY,
    PROMOTION_ID,
    PROMOTION_REASON,
    PROMOTION_REPLACES,
    ROLLBACK_ID,
    ROLLBACK_REASON,
    ROLLBACK_REPLACES,
    SUMMARY_ARTIFACT,
    TAGGED_METRICS,
    GateDecision,
    Recipe,
    VersionSpec,
)
from pneumo.model_card import render_card
from pneumo.models import alias_version
from pneumo.notify import model_event
from pneumo.orchestration import registry_lock
from pneumo.services import SERVICE_TASK, until_reachable

EVENT_ORDER = {
    "registered": 0,
    "gate": 1,
    "repaired": 2,
    "promoted": 3,
    "rolled_back": 4,
}  # within one second


class ChampionMoved(RuntimeError):
    """``champion`` no longer points at the version the gate compared against: gate again."""

    retryable = False  # the flow gates again; retrying the move would fail the same way


class RegistryError(RuntimeError):
    """A registry operation that must not happen (e.g. a rollback with nothing to roll back to)."""


def audit(
    name: str, version: str, event: str, reason: str, event_id: str | None = None, **details: Any
) -> None:
    """Record one event as its own artifact of the version's run, and tag the version.

    The file's name is new every time (``<event>-<event id>-<random>.json``): no write replaces
    another. ``event_id`` lets a retried write find the record an earlier attempt made.
    """
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    if event_id and _audited(client, run_id, event, event_id):
        return  # recorded by an earlier attempt
    event_id = event_id or uuid.uuid4().hex[:12]
    path = f"{AUDIT_FOLDER}/{event}-{event_id}-{uuid.uuid4().hex[:8]}.json"
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    record = {"event": event, "at": at, "model": name, "version": str(version), "reason": reason,
              "event_id": event_id, **details}  # fmt: skip
    client.log_dict(run_id, record, path)
    client.set_model_version_tag(name, version, f"{event}_at", at[:19] + "+00:00")
    client.set_model_version_tag(name, version, f"{event}_reason", reason[:4000])


def history(name: str) -> list[dict[str, Any]]:
    """Every audit event of every version of ``name``, oldest first.

    Raises:
        MlflowException: the registry or an event could not be read (never an empty history).
    """
    client = mlflow.MlflowClient()
    events = []
    for version in client.search_model_versions(f"name='{name}'"):
        for item in client.list_artifacts(version.run_id, AUDIT_FOLDER):
            record = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{item.path}")
            if record.get("model") == name and record.get("version") == str(version.version):
                events.append(record)
    seen, unique = set(), []  # two racing writers of one event each kept their record: show it once
    for record in sorted(events, key=lambda e: (e["at"], EVENT_ORDER.get(e["event"], len(EVENT_ORDER)))):
        key = (record["version"], record["event"], record.get("event_id") or id(record))
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique


@task(name="register", **SERVICE_TASK)
@until_reachable("registering the model")
def register(model_uri: str, run_id: str, results: dict[str, float], params: dict[str, Any],
             data: dict[str, str], recipe: Recipe) -> str:  # fmt: skip
    """Register the candidate as a new version, with its threshold, metrics, recipe and model card.

    Args:
        model_uri: the logged model.
        run_id: its training run.
        results: the evaluate task's threshold and test metrics.
        params: the parameters it was trained with (logged in full as ``recipe/params.json``).
        data: ``data_version`` (DVC) and ``data_path`` (its folder in the workdir).
        recipe: how it was made.

    A retry after a partial failure reuses the version already registered for the run.
    """
    name = params["registry"]["model_name"]
    client = mlflow.MlflowClient()
    spec = VersionSpec(
        threshold=results["threshold"],
        image_size=params["data"]["image_size"],
        square=params["data"]["square"],
        run_id=run_id,
        data_version=data["data_version"],
        data_path=data["data_path"],
        recipe=recipe,
        metrics={name: results[name] for name in TAGGED_METRICS},
        calibration=(results["calibration_a"], results["calibration_b"])
        if "calibration_a" in results
        else None,
        graph=INT8_ARTIFACT if results.get("int8_served") else ONNX_ARTIFACT,
    )
    client.log_dict(run_id, params, PARAMS_ARTIFACT)
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    version = existing[0] if existing else mlflow.register_model(model_uri, name, tags=spec.to_tags())
    audit(name, version.version, "registered", f"trained by {recipe.trigger} on {recipe.source}",
          event_id=f"registered-{run_id}", recipe=recipe.to_tags())  # fmt: skip
    run_tags = client.get_run(run_id).data.tags
    provenance = {"run_id": run_id, "data_version": data["data_version"], "data_source": recipe.source,
                  "git_commit": run_tags.get("git_commit", "unknown")}  # fmt: skip
    summary = mlflow.artifacts.load_dict(f"runs:/{run_id}/{SUMMARY_ARTIFACT}")
    card = render_card(name, str(version.version), results, params, summary, provenance)
    client.log_text(run_id, card, CARD_ARTIFACT)
    client.update_model_version(name, version.version, description=card)
    print(f"registered {name} v{version.version} (threshold {results['threshold']:.4f}), model card logged")
    return str(version.version)


@task(name="record-gate", **SERVICE_TASK)
@until_reachable("recording the gate's decision")
def record_gate(name: str, version: str, decision: GateDecision) -> None:
    """Tag the version with the verdict, log every number behind it, and audit it."""
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    client.log_dict(run_id, decision.to_dict(), GATE_ARTIFACT)
    verdict = "passed" if decision.promote else "refused"
    client.set_model_version_tag(name, version, GATE_TAG, verdict)
    client.set_model_version_tag(name, version, GATE_REASONS_TAG, "; ".join(decision.reasons)[:4000])
    client.set_model_version_tag(name, version, GATE_CHAMPION_TAG, decision.champion or "none")
    audit(name, version, "gate", "; ".join(decision.reasons), verdict=verdict, champion=decision.champion,
          judged_on=decision.judged_on)  # fmt: skip


def _audited(client: Any, run_id: str, event: str, event_id: str) -> bool:
    """Whether the event with this id is recorded (as ``<event>-<id>-<random>.json``, or as
    ``<event>-<id>.json`` by versions before names were made unique)."""
    names = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, AUDIT_FOLDER)}
    return f"{event}-{event_id}.json" in names or any(n.startswith(f"{event}-{event_id}-") for n in names)


def repair(name: str) -> list[str]:
    """Finish a promotion or rollback that stopped between its alias moves (a killed process).

    A promotion records its intent on the version before ``champion`` moves and audits itself after
    ``previous`` moved: a champion whose promotion is not audited gets its ``previous`` set and the
    record written now. A rollback records its intent likewise: a ``previous`` equal to ``champion``
    (a rollback that stopped) is removed, and an unaudited rollback recorded.

    Returns:
        What was repaired, one line each (empty when nothing was half done).
    """
    client = mlflow.MlflowClient()
    champion, previous = alias_version(name, CHAMPION), alias_version(name, PREVIOUS)
    if champion is None:
        return []
    version, tags, done = str(champion.version), champion.tags, []
    if previous is not None and str(previous.version) == version:
        client.delete_registered_model_alias(name, PREVIOUS)
        audit(name, version, "repaired", f"@{PREVIOUS} pointed at the champion (a rollback stopped half way)")
        done.append(f"removed @{PREVIOUS}, which pointed at the champion v{version}")
    rollback_id = tags.get(ROLLBACK_ID)
    if rollback_id and not _audited(client, champion.run_id, "rolled_back", rollback_id):
        replaced = tags.get(ROLLBACK_REPLACES) or None
        reason = f"{tags.get(ROLLBACK_REASON, '')} (completed after an interruption)"
        audit(name, version, "rolled_back", reason, event_id=rollback_id, replaced=replaced, by="operator")
        done.append(f"recorded the rollback to v{version}")
    promotion_id = tags.get(PROMOTION_ID)
    if promotion_id and not _audited(client, champion.run_id, "promoted", promotion_id):
        replaced = None if tags.get(PROMOTION_REPLACES, "none") == "none" else tags[PROMOTION_REPLACES]
        if replaced is not None:
            client.set_registered_model_alias(name, PREVIOUS, replaced)
        reason = f"{tags.get(PROMOTION_REASON, '')} (completed after an interruption)"
        audit(name, version, "promoted", reason, event_id=promotion_id, replaced=replaced,
              by=tags.get(PROMOTION_BY, "gate"))  # fmt: skip
        done.append(f"completed the promotion of v{version}: @{PREVIOUS} is v{replaced}")
    for line in done:
        print(f"registry repaired: {line}")
    return done


@task(name="repair-registry", **SERVICE_TASK)
@until_reachable("checking the registry for a half-done promotion")
def repair_registry(name: str) -> list[str]:
    """:func:`repair` under the registry lock, as a step of the training flow."""
    with registry_lock(name):
        return repair(name)


@task(name="promote", **SERVICE_TASK)
@until_reachable("moving the champion alias")
def promote(
    name: str, version: str, reason: str, expected: str | None, by: str = "gate", force: bool = False
) -> dict[str, Any]:
    """Make ``version`` the champion if ``champion`` still points at ``expected`` (compare-and-set).

    Under the registry lock: half-done moves are repaired first; the intent (what it replaces, why,
    by whom) goes on the version; ``champion`` moves, in one call; then ``previous``; then the
    event is audited. A failure anywhere leaves production on a complete, passed model, and the
    next registry operation finishes the rest (:func:`repair`).

    Raises:
        ChampionMoved: ``champion`` points at neither ``expected`` nor ``version``.
        RegistryLockUnavailable: Prefect is unreachable and ``force`` (the operator's) is not set.
    """
    client = mlflow.MlflowClient()
    with registry_lock(name, force=force) as locked:
        repair(name)
        current = alias_version(name, CHAMPION)
        current_version = str(current.version) if current else None
        if current_version == version:
            replaced = client.get_model_version(name, version).tags.get(PROMOTION_REPLACES)
            return {"champion": version, "previous": None if replaced in (None, "none") else replaced}
        if current_version != expected:
            raise ChampionMoved(
                f"{name}@{CHAMPION} is v{current_version}, not v{expected} as when the gate compared: "
                "gate again"
            )
        promotion_id = uuid.uuid4().hex[:12]
        intent = {PROMOTION_REPLACES: current_version or "none", PROMOTION_ID: promotion_id,
                  PROMOTION_REASON: reason[:4000], PROMOTION_BY: by}  # fmt: skip
        for key, value in intent.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, CHAMPION, version)
        if current_version is not None:
            client.set_registered_model_alias(name, PREVIOUS, current_version)
        audit(name, version, "promoted", reason, event_id=promotion_id, replaced=current_version, by=by,
              **_lock_note(locked))  # fmt: skip
    model_event("promoted", name, version, replaced=current_version, reason=reason, by=by)
    shown = f" (v{current_version} is @{PREVIOUS})" if current_version else ""
    print(f"promoted {name} v{version} to @{CHAMPION}{shown}")
    return {"champion": version, "previous": current_version}


def _lock_note(locked: bool) -> dict[str, str]:
    """What an audit record says of a move made without the registry lock (``--force``)."""
    return {} if locked else {"lock": "bypassed (--force): Prefect was unreachable"}


def rollback(name: str, reason: str, force: bool = False) -> dict[str, str]:
    """Put ``previous`` back as ``champion``; the rolled-back version loses both aliases.

    Like a promotion: under the registry lock (or ``force``d without it, and audited as such), the
    intent goes on the version first, ``champion`` is read again and moves only if it is still the
    one the rollback replaces (compare-and-set), then ``previous`` is removed and the event audited;
    :func:`repair` finishes one a killed process left.

    Raises:
        RegistryError: there is no ``previous`` version (one equal to the champion is removed).
        ChampionMoved: ``champion`` moved while the rollback was being prepared.
        RegistryLockUnavailable: Prefect is unreachable and ``force`` is not set.
    """
    client = mlflow.MlflowClient()
    with registry_lock(name, force=force) as locked:
        repaired = repair(name)  # a previous equal to the champion is removed here
        previous, current = alias_version(name, PREVIOUS), alias_version(name, CHAMPION)
        if previous is None:
            raise RegistryError(
                f"{name} has no @{PREVIOUS} version to roll back to"
                + "".join(f" ({line})" for line in repaired)
                + ": promote another version with `pneumo model promote VERSION --reason ...`"
            )
        rolled_back, target = str(current.version) if current else "", str(previous.version)
        rollback_id = uuid.uuid4().hex[:12]
        intent = {ROLLBACK_ID: rollback_id, ROLLBACK_REPLACES: rolled_back, ROLLBACK_REASON: reason[:4000]}
        for key, value in intent.items():
            client.set_model_version_tag(name, target, key, value)
        now = alias_version(name, CHAMPION)
        if (str(now.version) if now else "") != rolled_back:
            moved = now.version if now else None
            raise ChampionMoved(f"{name}@{CHAMPION} moved to v{moved} meanwhile: look at `pneumo model"
                                " history`, then roll back again if still needed")  # fmt: skip
        client.set_registered_model_alias(name, CHAMPION, target)
        client.delete_registered_model_alias(name, PREVIOUS)
        audit(name, target, "rolled_back", reason, event_id=rollback_id, replaced=rolled_back or None,
              by="operator", **_lock_note(locked))  # fmt: skip
    model_event("rolled-back", name, target, rolled_back=rolled_back or None, reason=reason)
    return {"champion": target, "rolled_back": rolled_back}
