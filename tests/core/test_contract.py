"""pneumo.contract: the tags training writes are the tags serving, the gate and monitoring read."""

from __future__ import annotations

import pytest

from pneumo.contract import SQUARE_DEFAULT, ContractError, Recipe, VersionSpec

RECIPE = Recipe("s3://pneumo-raw/clinic", "xray", {"train": {"epochs": 10}}, "drift")
SPEC = VersionSpec(
    threshold=0.0451,
    image_size=224,
    square="pad",
    run_id="abc123",
    data_version="0f1e.dir",
    data_path="data/raw/pneumo-raw-clinic-0123456789ab",
    recipe=RECIPE,
    metrics={"test_auc": 0.99612, "test_sensitivity": 1.0},
)


def test_a_version_spec_survives_the_registry_round_trip():
    tags = SPEC.to_tags()
    assert all(isinstance(value, str) for value in tags.values())  # MLflow stores strings
    back = VersionSpec.from_tags(tags)
    assert back == VersionSpec(**{**SPEC.__dict__, "metrics": {"test_auc": 0.9961, "test_sensitivity": 1.0}})
    assert (
        back.recipe == RECIPE and back.recipe.deployment_parameters("drift")["overrides"] == RECIPE.overrides
    )


def test_older_versions_read_with_the_documented_defaults():
    old = VersionSpec.from_tags({"threshold": "0.5", "image_size": "128"})
    assert (old.square, old.recipe, old.metrics) == (SQUARE_DEFAULT, None, {})
    assert old.required("v1") is old


def test_a_version_the_flow_did_not_register_is_refused_by_name():
    foreign = VersionSpec.from_tags({"square": "crop"})
    assert foreign.missing() == ["threshold", "image_size"]
    with pytest.raises(ContractError, match=r"pneumonia v7 lacks the tags threshold, image_size"):
        foreign.required("pneumonia v7")
    assert issubclass(ContractError, LookupError)  # the CLI reports it as a lookup failure
