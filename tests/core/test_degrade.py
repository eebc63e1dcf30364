"""pneumo.degrade: the stand-ins for another site's pipeline, and a version measured under them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumo.datasets import read_labelled
from pneumo.degrade import CONDITIONS, DEGRADED, degraded_metrics
from pneumo.images import decode, prepare
from pneumo.synth import generate


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("degrade")
    generate(folder, n=24, seed=3, size=180, layout="folders")
    return read_labelled(folder)


def test_every_condition_changes_the_image_the_way_its_name_says(labelled):
    original = decode(Path(labelled["path"].iloc[0]).read_bytes())
    changed = {name: change(original) for name, change in CONDITIONS.items()}
    assert changed["original"] is original and tuple(n for n in CONDITIONS if n != "original") == DEGRADED
    mean = {name: np.asarray(image.convert("L"), float).mean() for name, image in changed.items()}
    assert mean["gamma_0.67"] > mean["original"] > mean["gamma_1.5"]
    spread = {name: np.asarray(image.convert("L"), float).std() for name, image in changed.items()}
    assert spread["contrast_0.7"] < spread["original"] < spread["contrast_1.3"]
    assert changed["squashed_jpeg75"].size == (224, 224) and changed["squashed_jpeg75"].mode == "RGB"
    assert min(changed["low_res_112px"].size) == 112
    assert changed["square_cropped"].width == changed["square_cropped"].height


def test_degraded_metrics_decide_every_copy_at_the_given_threshold(labelled):
    """A 'model' that scores brightness: gamma 0.67 brightens every image, so at the same threshold it
    flags more of them, which is how another site's pipeline moves an operating point."""
    y = labelled["label"].to_numpy()

    def brightness(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).mean(axis=1) / 255

    home = brightness(np.stack([prepare(decode(Path(p).read_bytes()), 64) for p in labelled["path"]]))
    threshold = float(np.median(home))
    measured = degraded_metrics(labelled["path"].tolist(), y, brightness, threshold, 64, "crop")
    assert set(measured) == set(DEGRADED)
    flagged_home = (home >= threshold).mean()
    brighter = measured["gamma_0.67"]
    positives, negatives = y.sum(), len(y) - y.sum()
    flagged = (brighter["sensitivity"] * positives + (1 - brighter["specificity"]) * negatives) / len(y)
    assert flagged > flagged_home
    assert all(set(m) == {"auc", "sensitivity", "specificity"} for m in measured.values())
