"""pneumo.config: profiles, overrides and their errors."""

from __future__ import annotations

import pytest

from pneumo.config import load_params, parse_overrides


def test_profiles_merge_over_base_and_overrides_win():
    params = load_params("demo", parse_overrides(["train.epochs=1", "gate.max_drop.auc=0.1"]))
    assert params["train"]["backbone"] == "small_cnn"
    assert params["train"]["epochs"] == 1
    assert params["gate"]["max_drop"]["auc"] == 0.1
    assert params["data"]["val_fraction"] == load_params()["data"]["val_fraction"]


def test_unknown_profile_and_override_are_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        load_params("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        load_params("default", parse_overrides(["train.epoch=1"]))
    with pytest.raises(ValueError, match=r"section\.key=value"):
        parse_overrides(["epochs"])
