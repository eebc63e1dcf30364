"""Operators are told: failed or crashed runs, promotions and rollbacks, as events delivered by
Prefect Automations to a webhook.

``pneumo deploy`` (and ``make run``) save a Prefect Webhook block pointing at
``PNEUMO_EVENTS_URL`` (default: the local service's ``POST /admin/events``, with the admin token)
and two automations that call it: one on ``prefect.flow-run.Failed`` and ``Crashed`` of the
``training`` and ``monitoring`` flows, one on the ``pneumo.model.promoted`` and
``pneumo.model.rolled-back`` events the registry emits. Any receiver of JSON webhooks (a chat
incoming webhook, an incident tool) can take the service's place.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from prefect.automations import Automation
from prefect.blocks.webhook import Webhook
from prefect.events import emit_event
from prefect.events.actions import CallWebhook
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from pydantic import SecretStr

from pneumo.config import admin_token

WEBHOOK_BLOCK = "pneumo-operator-events"
RUN_AUTOMATION = "pneumo: tell operators about failed or crashed runs"
MODEL_AUTOMATION = "pneumo: tell operators about promotions and rollbacks"
MODEL_EVENTS = ("pneumo.model.promoted", "pneumo.model.rolled-back")
WATCHED_FLOWS = ["training", "monitoring"]
DEFAULT_EVENTS_URL = "http://127.0.0.1:8085/admin/events"
# What the webhook receives: one JSON object per event (rendered by the Prefect server).
PAYLOAD = (
    '{"event": {{ event.event|tojson }}, "occurred": {{ event.occurred|string|tojson }}, '
    '"resource": {{ event.resource.id|tojson }}, "name": {{ event.resource.name|tojson }}, '
    '"message": {{ event.resource.get("prefect.state-message", "")|tojson }}, '
    '"payload": {{ event.payload|tojson }}}'
)


def events_url() -> str:
    """Where operator events go: ``PNEUMO_EVENTS_URL``, or the local service."""
    return os.environ.get("PNEUMO_EVENTS_URL") or DEFAULT_EVENTS_URL


def ensure_operator_events(url: str | None = None, token: str | None = None) -> None:
    """Save the webhook block and (re)create the two automations that call it."""
    url, token = url or events_url(), token or admin_token(create=True)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    block_id = Webhook(method="POST", url=SecretStr(url), headers=headers).save(WEBHOOK_BLOCK, overwrite=True)
    action = CallWebhook(block_document_id=block_id, payload=PAYLOAD)
    runs = EventTrigger(
        expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        match_related=ResourceSpecification(
            {"prefect.resource.role": "flow", "prefect.resource.name": WATCHED_FLOWS}
        ),
        posture=Posture.Reactive,
        threshold=1,
    )
    models = EventTrigger(
        expect=set(MODEL_EVENTS),
        match=ResourceSpecification({"prefect.resource.id": "pneumo.model.*"}),
        posture=Posture.Reactive,
        threshold=1,
    )
    for name, trigger in ((RUN_AUTOMATION, runs), (MODEL_AUTOMATION, models)):
        with contextlib.suppress(ValueError):  # not there yet
            Automation.read(name=name).delete()
        Automation(
            name=name, description=f"{name} (pneumo.notify)", trigger=trigger, actions=[action]
        ).create()


def model_event(kind: str, name: str, version: str, **details: Any) -> None:
    """Emit ``pneumo.model.<kind>`` for the automations (no-op, with a warning, if Prefect is down)."""
    try:
        emit_event(
            event=f"pneumo.model.{kind}",
            resource={
                "prefect.resource.id": f"pneumo.model.{name}",
                "prefect.resource.name": f"{name} v{version}",
            },
            payload={"model": name, "version": str(version), **details},
        )
    except Exception as error:  # an event is a courtesy: the registry change itself has happened
        print(f"warning: could not emit pneumo.model.{kind} for {name} v{version}: {error}")
