"""What Prefect does for the loop beyond running flows: the deployments and their work pool, one
training per model at a time, one alias move at a time, and flow runs whose process died marked
CRASHED instead of RUNNING forever.

Both are Prefect's own mechanisms, so they hold across workers and machines: a global
concurrency limit with a lease (a killed holder's slot frees itself when the lease runs out), and
an automation fed by flow-run heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, set for workers
by :meth:`pneumo.config.Settings.client_env`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.concurrency.sync import concurrency
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run
from prefect.workers.process import ProcessWorker

from pneumo.config import ROOT
from pneumo.notify import ensure_operator_events

WORK_POOL = "pneumo-process"  # the process work pool of prefect.yaml's deployments
PREFECT = str(Path(sys.executable).parent / "prefect")

SLOT_LEASE_S = 60  # a holder that died frees its training slot after at most this long
HEARTBEAT_S = 30  # Prefect's minimum heartbeat interval
CRASHED_AFTER_S = 90  # no heartbeat for this long: the flow run's process is gone
MIN_CRASHED_AFTER_S = 2 * HEARTBEAT_S  # PNEUMO_CRASHED_AFTER_S's floor: a late heartbeat is no crash
ZOMBIE_AUTOMATION = "pneumo: mark flow runs without heartbeats as crashed"


def crashed_after_s() -> int:
    """Seconds without a heartbeat after which a flow run is marked CRASHED: ``PNEUMO_CRASHED_AFTER_S``
    (default 90, at least two heartbeat intervals). Read when the automation is created."""
    seconds = int(os.environ.get("PNEUMO_CRASHED_AFTER_S", CRASHED_AFTER_S))
    if seconds < MIN_CRASHED_AFTER_S:
        raise ValueError(
            f"PNEUMO_CRASHED_AFTER_S must be at least {MIN_CRASHED_AFTER_S} (two heartbeats of "
            f"{HEARTBEAT_S} s), not {seconds}"
        )
    return seconds


def zombie_message(seconds: int) -> str:
    """What an operator reads on a flow run marked CRASHED by the automation."""
    return (
        f"Crashed: no heartbeat for {seconds} s. The process running this flow stopped (its worker "
        "was killed, ran out of memory, or its machine went down); nothing after its last log line "
        "happened. Production is unchanged unless the log shows 'promoted'. Start a worker "
        "(pneumo deploy) and run it again."
    )


def training_limit(model_name: str) -> str:
    """The global concurrency limit that lets one training of ``model_name`` run at a time."""
    return f"pneumo-training-{model_name}"


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit ``name`` if it does not exist yet."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))


@contextlib.contextmanager
def training_slot(model_name: str) -> Iterator[None]:
    """Hold the model's one training slot for the body; wait (and say so) while another run has it.

    Deployment runs, ``pneumo train`` and the DVC stages all take it, so a scheduled, a
    drift-triggered and an operator's training never interleave their registry moves.
    """
    name = training_limit(model_name)
    ensure_limit(name)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=2, lease_duration=SLOT_LEASE_S, strict=True)
            )
        except TimeoutError:
            print(f"another training of {model_name} is running: waiting for it to finish (limit {name})")
            stack.enter_context(concurrency(name, occupy=1, lease_duration=SLOT_LEASE_S, strict=True))
            print(f"training slot of {model_name} acquired")
        yield


REGISTRY_LEASE_S = 60  # Prefect's minimum lease


class RegistryLockUnavailable(RuntimeError):
    """The registry lock cannot be taken (Prefect unreachable): no alias moves without it."""


@contextlib.contextmanager
def registry_lock(model_name: str, timeout_s: float = 120, force: bool = False) -> Iterator[bool]:
    """Serialise the alias moves of one model (promotions, rollbacks, repairs) across processes.

    With it, reading ``champion`` and moving it is one step for every other writer: the
    compare-and-set of a promotion cannot interleave with a rollback by hand. It fails closed: when
    Prefect cannot be reached (down, or a wrong ``PREFECT_API_URL`` on an operator's laptop) nothing
    moves, unless the operator says ``force`` (an emergency rollback with the orchestrator down),
    which the caller records in the audit trail.

    Yields:
        Whether the lock is held (False only when forced without it).

    Raises:
        TimeoutError: another process held the lock for ``timeout_s`` seconds.
        RegistryLockUnavailable: Prefect is unreachable and ``force`` is not set.
    """
    name = f"pneumo-registry-{model_name}"
    with contextlib.ExitStack() as stack:
        try:
            ensure_limit(name)
            stack.enter_context(
                concurrency(
                    name, occupy=1, timeout_seconds=timeout_s, lease_duration=REGISTRY_LEASE_S, strict=True
                )
            )
            held = True
        except TimeoutError:
            raise TimeoutError(
                f"the registry lock {name} was held for {timeout_s:.0f} s: try again"
            ) from None
        except (httpx.HTTPError, OSError) as error:
            if not force:
                raise RegistryLockUnavailable(
                    f"the registry lock {name} cannot be taken: Prefect is unreachable ({error}). No alias"
                    " moved. Try again once Prefect answers (pneumo stack up; check PREFECT_API_URL), or,"
                    " in an emergency, pass --force: the move is then recorded as made without the lock"
                ) from None
            print(f"warning: Prefect unreachable ({error}): moving aliases WITHOUT the lock {name} (--force)")
            held = False
        yield held


def ensure_zombie_automation() -> None:
    """Create the automation that marks flow runs CRASHED when their heartbeats stop
    (:func:`crashed_after_s`)."""
    seconds = crashed_after_s()
    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return
    except ValueError:  # not found
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="A flow run that stops sending heartbeats is marked CRASHED (pneumo.orchestration).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=zombie_message(seconds))],
    ).create()


def register_deployments() -> None:
    """Create the process work pool if needed, register every deployment of prefect.yaml, the
    automation that marks flow runs whose process died as CRASHED, and the automations that tell
    operators about failed runs, promotions and rollbacks (:mod:`pneumo.notify`).

    Raises:
        RuntimeError: ``prefect deploy`` failed (its output is in the message).
    """
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                template = ProcessWorker.get_default_base_job_template()
                client.create_work_pool(
                    WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template)
                )
    env = {**os.environ, "PNEUMO_HOME": str(ROOT)}
    result = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    ensure_zombie_automation()
    ensure_operator_events()


def worker_command(healthcheck: bool = False) -> list[str]:
    """The command that starts a Prefect worker on the project's work pool; with ``healthcheck``,
    the worker serves ``/health`` (Prefect's ``--with-healthcheck``) for a container's health check."""
    return [PREFECT, "worker", "start", "--pool", WORK_POOL, *(["--with-healthcheck"] if healthcheck else [])]


class Progress:
    """A Prefect progress artifact that advances as the work does (the run's page, Artifacts).

    Outside a flow run (a DVC stage, a test calling ``.fn``) there is nothing to show it on, and
    it does nothing. Progress is a courtesy: a failed update never fails the work.
    """

    def __init__(self, description: str) -> None:
        self._id = None
        if flow_run.get_id() is None:
            return
        try:
            self._id = create_progress_artifact(progress=0.0, description=description)
        except Exception as error:
            print(f"warning: no progress artifact for {description!r}: {error}")

    def update(self, done: float, total: float) -> None:
        """``done`` of ``total`` units are finished."""
        if self._id is None or not total:
            return
        with contextlib.suppress(Exception):
            update_progress_artifact(self._id, progress=round(min(100.0, 100.0 * done / total), 1))
