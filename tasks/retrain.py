"""Retraining on drift: start the training deployment on the champion's recipe, at most once per
cooldown, without letting a failed attempt silence the loop.

Within ``monitoring.cooldown_hours`` a retraining that is scheduled, waiting, running or completed
stops another one from starting. Failed, crashed or cancelled ones do not, but at most
``monitoring.max_attempts`` start within one cooldown window: a retraining that keeps failing is
reported, not retried forever.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterTags,
)
from prefect.deployments import run_deployment

RETRAIN_TAG = "drift-retraining"
ALIVE = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "COMPLETED")  # count for the cooldown
ENDED_BADLY = ("FAILED", "CRASHED", "CANCELLED", "CANCELLING")  # do not, up to max_attempts


@dataclass(frozen=True)
class Retraining:
    """One drift-triggered run of the training deployment, as Prefect sees it now."""

    id: str
    name: str
    state: str  # the state type: SCHEDULED, RUNNING, COMPLETED, FAILED, CRASHED, ...
    state_name: str  # e.g. "AwaitingConcurrencySlot", "Late"
    created: datetime
    message: str = ""

    def describe(self) -> str:
        shown = self.state_name if self.state_name.upper() != self.state else self.state.title()
        return f"{self.name} ({shown}, started {self.created:%Y-%m-%d %H:%M} UTC)"

    def to_dict(self) -> dict[str, Any]:
        return {"flow_run": self.id, "name": self.name, "state": self.state, "state_name": self.state_name,
                "created": self.created.isoformat(timespec="seconds"), "message": self.message}  # fmt: skip


def _as_retraining(run: Any) -> Retraining:
    state = run.state
    return Retraining(
        id=str(run.id),
        name=run.name,
        state=state.type.value if state else "UNKNOWN",
        state_name=state.name if state else "Unknown",
        created=run.created,
        message=(state.message or "")[:300] if state else "",
    )


def model_tag(model_name: str) -> str:
    """The tag that says which model a drift-triggered retraining is for."""
    return f"model:{model_name}"


def recent_retrainings(deployment: str, hours: float, model_name: str) -> list[Retraining]:
    """Drift-triggered runs of ``deployment`` for ``model_name`` from the last ``hours``, newest first."""
    flow_name, _, deployment_name = deployment.partition("/")
    since = datetime.now(UTC) - timedelta(hours=hours)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[RETRAIN_TAG, model_tag(model_name)]),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since),
            ),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
        )
    recent = [_as_retraining(run) for run in runs if run.created and run.created >= since]
    return sorted(recent, key=lambda r: r.created, reverse=True)


def plan(
    share: float | None, recent: list[Retraining], config: dict[str, Any], degraded: str | None = None
) -> dict[str, Any]:
    """What to do about a drift share and live performance, given the cooldown window's retrainings.

    Args:
        share: the drift share, or None when there were too few records to measure it.
        recent: the drift-triggered retrainings of the cooldown window.
        config: the ``monitoring`` section of params.yaml.
        degraded: why live performance is a reason to retrain (:mod:`pneumo.monitoring.performance`).

    Returns:
        ``decision`` (``no drift``, ``retrain``, ``cooldown`` or ``gave up``), ``reason``, and
        ``waiting_for`` or ``failed`` (the runs behind a cooldown or a refusal).
    """
    threshold, hours, attempts = config["drift_threshold"], config["cooldown_hours"], config["max_attempts"]
    causes = (
        [f"drift share {share:.2f} > threshold {threshold}"]
        if share is not None and share > threshold
        else []
    )
    causes += [degraded] if degraded else []
    if not causes:
        shown = "no drift share (too few records)" if share is None else f"drift share {share:.2f}"
        return {"decision": "no drift", "reason": f"{shown} <= threshold {threshold}"}
    cause = " and ".join(causes)
    alive = [r for r in recent if r.state in ALIVE]
    if alive:
        return {
            "decision": "cooldown",
            "reason": f"{cause}, but retraining {alive[0].describe()} "
            f"started within the last {hours:g} h: waiting for it",
            "waiting_for": alive[0].to_dict(),
        }
    if len(recent) >= attempts:
        names = "; ".join(r.describe() for r in recent)
        return {
            "decision": "gave up",
            "reason": f"{cause}, but the last {len(recent)} retrainings "
            f"within {hours:g} h all ended badly ({names}): not starting attempt {len(recent) + 1} "
            f"(monitoring.max_attempts {attempts}); read their logs in the Prefect UI",
            "failed": [r.to_dict() for r in recent],
        }
    attempt = f"attempt {len(recent) + 1} of {attempts}"
    earlier = f"; earlier: {'; '.join(r.describe() for r in recent)}" if recent else ""
    return {"decision": "retrain", "reason": f"{cause} ({attempt}{earlier})"}


def idempotency_key(model: str, version: str, recent: list[Retraining], cooldown_hours: float) -> str:
    """One key per attempt: two monitoring runs that decide at once (the schedule and an
    operator's ``pneumo monitor``) start one retraining between them, not two."""
    window = int(datetime.now(UTC).timestamp() // max(cooldown_hours * 3600, 60))
    seen = hashlib.sha256(",".join(sorted(r.id for r in recent)).encode()).hexdigest()[:12]
    return f"pneumo-drift:{model}:v{version}:{window}:{seen}"


@task(name="decide-retraining", retries=2, retry_delay_seconds=5)
def decide_and_trigger(
    summary: dict[str, Any], config: dict[str, Any], allow_trigger: bool, parameters: dict[str, Any]
) -> dict[str, Any]:
    """Start the training deployment with ``parameters`` when :func:`plan` says so.

    Args:
        summary: the monitoring summary (``model_name``, ``drift_share``, ``drifted_columns``, and
            ``performance`` with its ``degraded`` reason).
        config: the ``monitoring`` section of params.yaml.
        allow_trigger: False only reports what would be done.
        parameters: the deployment parameters (the champion's recipe, ``trigger: drift``).

    Returns:
        The plan, plus ``retraining`` (the run started, with its state) when one was started.
    """
    deployment, model = config["training_deployment"], summary["model_name"]
    recent = recent_retrainings(deployment, config["cooldown_hours"], model)
    degraded = (summary.get("performance") or {}).get("degraded")
    decided = plan(summary.get("drift_share"), recent, config, degraded)
    if decided["decision"] != "retrain":
        return decided
    drifted = ", ".join(summary.get("drifted_columns") or []) or "no drifted features"
    if not allow_trigger:
        reason = f"{decided['reason']}: {drifted}"
        return {**decided, "decision": "drift (retraining not triggered)", "reason": reason}
    run = run_deployment(
        deployment,
        parameters=parameters,
        timeout=0,
        as_subflow=False,
        tags=[
            RETRAIN_TAG,
            model_tag(model),
            *(
                [f"drift-share-{summary['drift_share']:.2f}"]
                if summary.get("drift_share") is not None
                else []
            ),
            *(["performance"] if degraded else []),
        ],
        idempotency_key=idempotency_key(
            model, summary["reference_version"], recent, config["cooldown_hours"]
        ),
    )
    started = _as_retraining(run)
    print(f"monitoring: started {deployment} as flow run {run.name} with {parameters} ({decided['reason']})")
    return {**decided, "reason": f"{decided['reason']}: {drifted}", "retraining": {**started.to_dict(),
            "parameters": parameters}}  # fmt: skip
