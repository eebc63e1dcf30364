"""The registry contract: what a registered model version carries, and the names everyone relies on.

Training writes it (:mod:`pneumo.tasks.registry`); serving, evaluation, the gate, monitoring, the
``pneumo model`` commands and the benchmarks read it, through this module only. A tag, an artifact
path or a layer name that two parts of the system must agree on is defined here and nowhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Aliases: the version in production, and the one it replaced (what a rollback goes back to).
CHAMPION, PREVIOUS = "champion", "previous"

# Artifacts of a version's training run.
MODEL_ARTIFACT = "model"  # the MLflow Keras model
ONNX_ARTIFACT = "onnx/model.onnx"  # the serving graph: [probability, penultimate activations, Grad-CAM map]
# (versions trained before Grad-CAM was exported have the first two only)
INT8_ARTIFACT = "onnx/model.int8.onnx"  # the same graph quantized to int8 (pneumo.quantize)
GRAPH_TAG = "serving_graph"  # the artifact the service runs: INT8_ARTIFACT when it passed the check
PCA_ARTIFACT = "monitoring/pca.json"  # the embedding's projection, fitted on the training images
REFERENCE_ARTIFACT = "monitoring/reference.csv"  # monitoring features of the training images
PARAMS_ARTIFACT = "recipe/params.json"  # the full parameters the version was trained with
GATE_ARTIFACT = "gate/decision.json"  # the gate's decision and every number behind it
CARD_ARTIFACT = "model_card.md"  # the version's model card (also its description)
HISTORY_ARTIFACT = "history.json"  # the per-epoch training metrics
SUMMARY_ARTIFACT = "data/summary.json"  # the processed data's summary (split sizes, unreadable)
AUDIT_FOLDER = "registry/audit"  # one JSON file per registry event, never rewritten

# Layers of the network that serving, Grad-CAM and monitoring reach by name.
INPUT_LAYER = "image"  # (size, size, 1) grayscale, pixel values 0..255
FEATURE_POOL = "pool"  # global pooling after the last convolutional feature map: Grad-CAM starts here
EMBEDDING_LAYER = "head"  # the dense layer before the output: monitoring's embedding
OUTPUT_LAYER = "pneumonia"  # the sigmoid probability

# Tags the registry itself writes on a version: the gate's verdict, and a promotion's intent (written
# before the alias moves, so the next registry step can finish a promotion a killed process left).
GATE_TAG, GATE_REASONS_TAG, GATE_CHAMPION_TAG = "gate", "gate_reasons", "gate_champion"
PROMOTION_ID, PROMOTION_REPLACES = "promotion_id", "promotion_replaces"
PROMOTION_REASON, PROMOTION_BY = "promotion_reason", "promotion_by"
ROLLBACK_ID, ROLLBACK_REPLACES, ROLLBACK_REASON = "rollback_id", "rollback_replaces", "rollback_reason"
TRIGGERS = ("operator", "deployment", "drift")  # who started a training run
SITE_TAG_PREFIX = "site."  # site.<name>: that site's threshold (SiteThreshold), set by `pneumo calibrate`
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
SQUARE_DEFAULT = "crop"  # versions registered before ``square`` was recorded were centre-cropped
TAGGED_METRICS = ("test_auc", "test_sensitivity", "test_specificity", "test_precision", "test_f1",
                  "test_accuracy")  # fmt: skip


class ContractError(LookupError):
    """A version lacks what the contract requires (it was not registered by the training flow)."""


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


def platt(p: Any, a: float, b: float) -> Any:
    """What the ``calibration_a``/``calibration_b`` tags mean: ``sigmoid(a * logit(p) + b)``.

    Monotone, so deciding on the calibrated probability at the mapped threshold changes nothing;
    it makes the number mean what it says (of 100 images given 0.8, about 80 show pneumonia).
    """
    return 1 / (1 + np.exp(-(a * logit(p) + b)))


def logit(p: Any) -> Any:
    """``log(p / (1 - p))``, with p kept inside (1e-6, 1 - 1e-6): a probability of 1.0 stays finite."""
    clipped = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def check_site(name: str) -> str:
    """``name`` if it can name a site (letters, digits, ``-`` and ``_``, at most 63), else ValueError."""
    if not SITE_NAME.fullmatch(name or ""):
        raise ValueError(f"site name {name!r}: use letters, digits, '-' and '_' (at most 63 characters)")
    return name


@dataclass(frozen=True)
class SiteThreshold:
    """A site's own decision threshold for one version, chosen on a labelled sample of its images.

    ``sensitivity`` and ``specificity`` are the sample's, with 95% patient-bootstrap ``intervals``;
    with a ``confidence``, ``sensitivity_bound`` is the one-sided lower bound that met the target.
    """

    site: str
    threshold: float
    target_sensitivity: float
    sensitivity: float
    specificity: float
    images: int
    positives: int
    data: str
    calibrated_at: str
    confidence: float | None = None
    sensitivity_bound: float | None = None
    intervals: dict[str, list[float]] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{SITE_TAG_PREFIX}{self.site}"

    def to_tag_value(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tag_value(cls, value: str, site: str | None = None) -> SiteThreshold:
        """The tag's value read back; ValueError when it cannot decide (a hand-edited tag, say).

        Fields a newer release added are ignored; ``site`` must match the one the tag names.
        """
        data = json.loads(value)
        if not isinstance(data, dict):
            raise ValueError("a site threshold is a JSON object")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        threshold = known.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold {threshold!r} is not a number in [0, 1]")
        if site is not None and known.get("site") != site:
            raise ValueError(f"the tag of site {site!r} holds site {known.get('site')!r}")
        return cls(**{**known, "threshold": float(threshold)})


def _sites(tags: dict[str, str]) -> dict[str, SiteThreshold]:
    """The site thresholds among a version's tags; one edited by hand into nonsense is left out
    (a version must stay loadable, and decide), and the version's own threshold applies there."""
    sites = {}
    for key, value in tags.items():
        if key.startswith(SITE_TAG_PREFIX):
            site = key.removeprefix(SITE_TAG_PREFIX)
            try:
                sites[site] = SiteThreshold.from_tag_value(value, site)
            except (TypeError, ValueError):
                continue
    return sites


@dataclass(frozen=True)
class VersionSpec:
    """The tags training writes on a registered version: how to feed it, where it decides, what
    it was trained on, and how well it did.

    ``threshold`` and ``image_size`` are None only on versions registered outside the training flow;
    :meth:`required` refuses those where a prediction needs them.
    """

    threshold: float | None
    image_size: int | None
    square: str = SQUARE_DEFAULT
    run_id: str | None = None
    data_version: str | None = None
    data_path: str | None = None
    recipe: Recipe | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    sites: dict[str, SiteThreshold] = field(default_factory=dict)
    calibration: tuple[float, float] | None = None  # Platt (a, b): sigmoid(a * logit(p) + b)
    graph: str = ONNX_ARTIFACT  # what ONNX Runtime serves (GRAPH_TAG); versions before int8: float

    def to_tags(self) -> dict[str, str]:
        a, b = self.calibration or (None, None)
        tags = {"threshold": self.threshold, "image_size": self.image_size, "square": self.square,
                "calibration_a": a, "calibration_b": b, GRAPH_TAG: self.graph,
                "run_id": self.run_id, "data_version": self.data_version, "data_path": self.data_path,
                **{name: round(value, 4) for name, value in self.metrics.items()}}  # fmt: skip
        tags = {key: str(value) for key, value in tags.items() if value is not None}
        sites = {site.tag: site.to_tag_value() for site in self.sites.values()}
        return {**tags, **(self.recipe.to_tags() if self.recipe else {}), **sites}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> VersionSpec:
        return cls(
            threshold=float(tags["threshold"]) if "threshold" in tags else None,
            image_size=int(tags["image_size"]) if "image_size" in tags else None,
            square=tags.get("square", SQUARE_DEFAULT),
            run_id=tags.get("run_id"),
            data_version=tags.get("data_version"),
            data_path=tags.get("data_path"),
            recipe=Recipe.from_tags(tags),
            metrics={name: float(tags[name]) for name in TAGGED_METRICS if name in tags},
            sites=_sites(tags),
            calibration=(float(tags["calibration_a"]), float(tags["calibration_b"]))
            if "calibration_a" in tags and "calibration_b" in tags
            else None,
            graph=INT8_ARTIFACT if tags.get(GRAPH_TAG) == INT8_ARTIFACT else ONNX_ARTIFACT,
        )

    @classmethod
    def of(cls, version: Any) -> VersionSpec:
        """The spec of an MLflow ``ModelVersion``."""
        return cls.from_tags(version.tags)

    def decision_threshold(self, site: str | None) -> tuple[float | None, str | None]:
        """The threshold to decide with, and the site it belongs to.

        A site calibrated on this version (``pneumo calibrate``) decides with its own threshold;
        without a site, or for a site not calibrated on this version (a newly promoted one, say),
        the version's own threshold applies and the site returned is None.
        """
        if site and site in self.sites:
            return self.sites[site].threshold, site
        return self.threshold, None

    def operating_point(self, site: str | None) -> dict[str, Any] | None:
        """What deciding at :meth:`decision_threshold` means: the sensitivity and specificity measured
        there, and on what (the site's calibration sample, or the version's test split); None when
        the version has no such measurement."""
        if site and site in self.sites:
            calibrated = self.sites[site]
            return {"sensitivity": calibrated.sensitivity, "specificity": calibrated.specificity,
                    "measured_on": f"site {site}'s sample of {calibrated.images} images"}  # fmt: skip
        if "test_sensitivity" not in self.metrics or "test_specificity" not in self.metrics:
            return None
        sensitivity, specificity = self.metrics["test_sensitivity"], self.metrics["test_specificity"]
        return {
            "sensitivity": sensitivity,
            "specificity": specificity,
            "measured_on": "the version's test split",
        }

    def missing(self) -> list[str]:
        """The tags a prediction needs that this version lacks."""
        return [name for name in ("threshold", "image_size") if getattr(self, name) is None]

    def required(self, what: str) -> VersionSpec:
        """This spec, or :class:`ContractError` naming what ``what`` lacks."""
        if self.missing():
            raise ContractError(f"{what} lacks the tags {', '.join(self.missing())}: it was not "
                                "registered by the training flow")  # fmt: skip
        return self


@dataclass
class GateDecision:
    """Whether to promote, why, and every number behind it (logged as :data:`GATE_ARTIFACT`)."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    champion: str | None = None  # the champion version compared against (compare-and-set)
    comparisons: dict[str, Any] = field(default_factory=dict)
    judged_on: list[str] = field(default_factory=list)
    exception: str | None = None  # why only the candidate's test split counted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
