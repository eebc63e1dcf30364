"""What a registered model version carries, so that anything can retrain, judge or restore it.

Training writes these tags and artifacts; the gate, monitoring and the registry commands read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CHAMPION, PREVIOUS = "champion", "previous"  # production, and the version it replaced
PARAMS_ARTIFACT = "recipe/params.json"  # the full parameters the version was trained with
GATE_ARTIFACT = "gate/decision.json"  # the gate's decision and every number behind it
AUDIT_FOLDER = "registry/audit"  # one JSON file per registry event, never rewritten

TRIGGERS = ("operator", "deployment", "drift")  # who started a training run


@dataclass(frozen=True)
class Recipe:
    """How a version was made: enough to train it again on the same, or newer, data.

    ``source`` is the S3 data set, ``profile`` and ``overrides`` the parameters on top of
    params.yaml, ``trigger`` who started the run (:data:`TRIGGERS`).
    """

    source: str
    profile: str
    overrides: dict[str, Any] = field(default_factory=dict)
    trigger: str = "operator"

    def to_tags(self) -> dict[str, str]:
        return {
            "data_source": self.source,
            "profile": self.profile,
            "overrides": json.dumps(self.overrides, sort_keys=True),
            "trigger": self.trigger,
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Recipe | None:
        """The recipe recorded on a version; None for versions registered before it was recorded."""
        if not tags.get("data_source") or not tags.get("profile"):
            return None
        return cls(tags["data_source"], tags["profile"], json.loads(tags.get("overrides") or "{}"),
                   tags.get("trigger", "operator"))  # fmt: skip

    def deployment_parameters(self, trigger: str) -> dict[str, Any]:
        """The training deployment's parameters that retrain this recipe."""
        return {
            "source": self.source,
            "profile": self.profile,
            "overrides": self.overrides,
            "trigger": trigger,
        }
