"""pneumo.validation: every parameter checked before any work, with an error that names it."""

from __future__ import annotations

import re

import pytest

from pneumo.config import load_params, parse_overrides
from pneumo.validation import ParamsError


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (
            ["train.backbone=resnet"],
            "train.backbone must be one of densenet121, mobilenet_v3_small, small_cnn",
        ),
        (["data.square=round"], "data.square must be one of crop, pad, stretch, not 'round'"),
        (["train.epochs=ten"], "train.epochs must be an integer, not 'ten'"),
        (["train.epochs=0"], "train.epochs must be between 1 and 1000, not 0"),
        (["train.learning_rate=fast"], "train.learning_rate must be a number"),
        (["data.augment.online=maybe"], "data.augment.online must be true or false"),
        (["data.image_size=16"], "data.image_size must be between 32 and 1024"),
        (["train.epoch=3"], "unknown parameter 'train.epoch'"),
        (["train=3"], "train is a section"),
        (["gate.max_drop.test_auc=0.1"], "gate.max_drop knows auc, specificity_at_target"),
        (["data.val_fraction=0.5", "data.test_fraction=0.45"], "must leave at least 10% for training"),
        (["train.weights=/no/such/file.h5", "train.backbone=densenet121"], "existing weights file"),
        (["train.weights=imagenet"], "must be none for the small_cnn backbone"),
        (["data.image_size=32", "train.filters=[8, 8, 8, 8, 8, 8]"], "must be at least 64"),
        (["data.augment.widen=0.5"], "data.augment.widen must be between 1 and 4"),
        (["train.class_weight=inverse"], "train.class_weight must be one of none, balanced"),
        (["train.class_weight=balanced"], "data.balance and train.class_weight both correct"),
    ],
)
def test_wrong_values_are_refused_naming_key_and_allowed_values(pairs: list[str], message: str):
    with pytest.raises(ParamsError, match=re.escape(message)):
        load_params("demo", parse_overrides(pairs))


def test_every_profile_of_params_yaml_is_valid():
    for profile in ("default", "demo", "fast", "test", "xray"):
        assert load_params(profile)["profile"] == profile


def test_an_integer_is_a_number_and_a_number_is_not_an_integer():
    assert load_params("demo", parse_overrides(["train.learning_rate=1"]))["train"]["learning_rate"] == 1
    with pytest.raises(ParamsError, match=r"train\.batch_size must be an integer"):
        load_params("demo", parse_overrides(["train.batch_size=16.5"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gate": {"threshold_folds": 1}}, "at least 2"),
        ({"data": {"augment": {"online": False}}}, "online"),
    ],
)
def test_impossible_threshold_folds_are_refused_before_any_work(overrides: dict, message: str):
    with pytest.raises(ParamsError, match=message):
        load_params("xray", overrides)
    assert load_params("xray")["gate"]["threshold_folds"] == 5  # the profile itself is fine
