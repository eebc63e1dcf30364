"""Checks of parameter values, run by :func:`pneumo.config.load_params` before any work starts.

Types come from params.yaml itself (a value must have the type of the base value it replaces);
allowed values and ranges are listed here, next to the cross-field rules of the recipe. Every
error names the key and what is allowed, so ``pneumo train --set`` fails in one line, before
anything is uploaded or ingested.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

BACKBONES = ("densenet121", "mobilenet_v3_small", "small_cnn")
SQUARE_MODES = ("crop", "pad", "stretch")
LR_SCHEDULES = ("constant", "cosine")

CHOICES: dict[str, tuple[str, ...]] = {
    "data.square": SQUARE_MODES,
    "train.backbone": BACKBONES,
    "train.lr_schedule": LR_SCHEDULES,
    "train.class_weight": ("none", "balanced"),
}
# Inclusive (low, high) bounds; None: unbounded on that side.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.image_size": (32, 1024),
    "data.val_fraction": (0.01, 0.5),
    "data.test_fraction": (0.01, 0.5),
    "data.augment.rotation_deg": (0, 180),
    "data.augment.brightness": (0, 1),
    "data.augment.squeeze": (1, 4),
    "data.augment.widen": (1, 4),
    "data.augment.zoom": (0.1, 1),
    "data.augment.shift": (0, 1),
    "data.augment.gamma": (1, 5),
    "data.augment.contrast": (1, 5),
    "data.augment.low_resolution": (0.05, 1),
    "data.augment.low_resolution_p": (0, 1),
    "data.augment.jpeg_quality": (5, 95),
    "data.augment.jpeg_p": (0, 1),
    "train.convs_per_block": (1, 8),
    "train.head_units": (1, 4096),
    "train.dropout": (0, 0.95),
    "train.bn_momentum": (0, 1),
    "train.learning_rate": (1e-7, 1),
    "train.epochs": (1, 1000),
    "train.batch_size": (1, 1024),
    "train.patience": (0, 1000),
    "train.warm_start_epochs": (0, 1000),
    "gate.target_sensitivity": (0.5, 1),
    "gate.threshold_folds": (0, 20),
    "gate.bootstrap_resamples": (50, 100_000),
    "gate.min_test_auc": (0, 1.01),
    "gate.min_test_sensitivity": (0, 1.01),
    "gate.min_test_specificity": (0, 1.01),
    "monitoring.window_days": (0.01, 366),
    "monitoring.min_samples": (2, None),
    "monitoring.reference_size": (10, None),
    "monitoring.max_records": (100, None),
    "monitoring.drift_threshold": (0, 1),
    "monitoring.cooldown_hours": (0, None),
    "monitoring.max_attempts": (1, 100),
    "monitoring.min_labelled": (2, None),
    "monitoring.max_performance_drop": (0, 1),
}
# The gate compares candidate and champion on these metrics of the same images (pneumo.metrics).
GATE_DROPS = ("auc", "specificity_at_target")
# Keys whose value is a mapping of free keys to numbers (not compared with the base keys).
FREE_MAPPINGS = ("gate.max_drop",)


class ParamsError(ValueError):
    """A parameter has a value the recipe cannot use; the message names it and what is allowed."""


def _type_name(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


def check_types(base: dict[str, Any], params: dict[str, Any], prefix: str = "") -> None:
    """Every key of ``params`` exists in ``base`` and has the type of the base value.

    Raises:
        ParamsError: an unknown key, or a value of another type (an integer is a number too).
    """
    for key, value in params.items():
        name = f"{prefix}{key}"
        if key not in base:
            raise ParamsError(f"unknown parameter {name!r} (not in params.yaml)")
        expected = base[key]
        if name in FREE_MAPPINGS:
            if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
                raise ParamsError(f"{name} must be a mapping of metric names to numbers, not {value!r}")
            continue
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ParamsError(f"{name} is a section: set its keys ({name}.KEY=VALUE), not {value!r}")
            check_types(expected, value, f"{name}.")
            continue
        if isinstance(expected, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(expected, bool)
        elif isinstance(expected, float):
            ok = _is_number(value)
        else:
            ok = isinstance(value, type(expected))
        if not ok:
            raise ParamsError(f"{name} must be {_type_name(expected)}, not {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _get(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


def check_values(params: dict[str, Any]) -> None:
    """Allowed values, ranges and the rules that tie parameters together.

    Raises:
        ParamsError: the first value the recipe cannot use.
    """
    for key, allowed in CHOICES.items():
        if _get(params, key) not in allowed:
            raise ParamsError(f"{key} must be one of {', '.join(allowed)}, not {_get(params, key)!r}")
    for key, (low, high) in RANGES.items():
        value = _get(params, key)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ParamsError(f"{key} must be {bounds}, not {value!r}")
    data, train, gate = params["data"], params["train"], params["gate"]
    if data["val_fraction"] + data["test_fraction"] >= 0.9:
        raise ParamsError("data.val_fraction + data.test_fraction must leave at least 10% for training")
    filters = train["filters"]
    if not filters or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters):
        raise ParamsError(f"train.filters must be a list of positive integers, not {filters!r}")
    if train["backbone"] == "small_cnn" and data["image_size"] < 2 ** len(filters):
        raise ParamsError(
            f"train.filters has {len(filters)} pooling blocks: data.image_size must be at least "
            f"{2 ** len(filters)}, not {data['image_size']}"
        )
    weights = train["weights"]
    if train["backbone"] == "small_cnn" and weights != "none":
        raise ParamsError(
            "train.weights must be none for the small_cnn backbone (it has no pretrained weights)"
        )
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise ParamsError(
            f"train.weights must be none, imagenet or an existing weights file, not {weights!r}"
        )
    if data["balance"] and train["class_weight"] != "none":
        raise ParamsError(
            "data.balance and train.class_weight both correct the class imbalance: set data.balance: "
            "false to weigh the loss instead of copying images, or train.class_weight: none"
        )
    if gate["threshold_folds"] == 1:
        raise ParamsError("gate.threshold_folds must be 0 (validation split) or at least 2, not 1")
    if gate["threshold_folds"] and not data["augment"]["online"]:
        raise ParamsError("gate.threshold_folds needs data.augment.online: true")
    unknown = set(gate["max_drop"]) - set(GATE_DROPS)
    if unknown:
        raise ParamsError(f"gate.max_drop knows {', '.join(GATE_DROPS)}, not {', '.join(sorted(unknown))}")
    for metric, drop in gate["max_drop"].items():
        if not 0 <= drop <= 1:
            raise ParamsError(f"gate.max_drop.{metric} must be between 0 and 1, not {drop!r}")
