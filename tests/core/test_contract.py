"""pneumo.contract: the tags training writes are the tags serving, the gate and monitoring read."""

from __future__ import annotations

import json

import pytest

from pneumo.contract import SQUARE_DEFAULT, ContractError, Recipe, SiteThreshold, VersionSpec, check_site

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


SITE = SiteThreshold(
    site="north-clinic",
    threshold=0.1234,
    target_sensitivity=0.95,
    sensitivity=0.96,
    specificity=0.88,
    images=120,
    positives=60,
    data="/data/north",
    calibrated_at="2026-11-28T06:00:00+00:00",
    confidence=0.95,
    sensitivity_bound=0.951,
    intervals={"sensitivity": [0.9, 1.0]},
)


def test_a_site_threshold_rides_on_the_version_and_decides_only_for_its_site():
    spec = VersionSpec(**{**SPEC.__dict__, "sites": {SITE.site: SITE}})
    tags = spec.to_tags()
    assert tags["site.north-clinic"] == SITE.to_tag_value()
    back = VersionSpec.from_tags(tags)
    assert back.sites == {"north-clinic": SITE}
    assert back.decision_threshold("north-clinic") == (0.1234, "north-clinic")
    assert back.decision_threshold("south") == (SPEC.threshold, None)  # not calibrated: the version's own
    assert back.decision_threshold(None) == (SPEC.threshold, None)


def test_a_site_tag_edited_into_nonsense_leaves_the_version_loadable():
    value = json.loads(SITE.to_tag_value())
    tags = {**SPEC.to_tags(), "site.broken": "{not json", "site.partial": '{"site": "partial"}',
            "site.text": json.dumps({**value, "site": "text", "threshold": "0.3"}),
            "site.none": json.dumps({**value, "site": "none", "threshold": None}),
            "site.above": json.dumps({**value, "site": "above", "threshold": 1.5}),
            "site.other": json.dumps(value),  # the tag of "other" holds north-clinic's threshold
            "site.newer": json.dumps({**value, "site": "newer", "added_later": 1})}  # fmt: skip
    spec = VersionSpec.from_tags(tags)
    assert set(spec.sites) == {"newer"} and spec.sites["newer"].threshold == SITE.threshold
    for site in ("broken", "partial", "text", "none", "above", "other"):
        assert spec.decision_threshold(site) == (SPEC.threshold, None)


@pytest.mark.parametrize("name", ["", "a b", "../x", "x" * 64, "-lead", "é"])
def test_site_names_are_checked(name: str):
    with pytest.raises(ValueError, match="site name"):
        check_site(name)
    assert check_site("north_clinic-2") == "north_clinic-2"
