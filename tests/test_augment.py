"""Unit tests of online augmentation, context storage and bootstrap intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pneumo.augment import context, context_side, random_view
from pneumo.config import load_params
from pneumo.images import prepare
from pneumo.metrics import REPORTED, binary_metrics, bootstrap_intervals
from tasks.preprocess import load_contexts, save_contexts
from tasks.train import balanced_order

AUG = load_params("xray")["data"]["augment"]
NO_AUGMENTATION = {
    **AUG,
    **{"squeeze": 1.0, "zoom": 1.0, "shift": 0.0, "rotation_deg": 0, "horizontal_flip": False},
    **{"gamma": 1.0, "contrast": 1.0, "brightness": 0.0, "low_resolution_p": 0.0, "jpeg_p": 0.0},
}


def _wide(width: int = 600, height: int = 300) -> Image.Image:
    pixels = np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1))
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def test_context_keeps_short_side_and_caps_long_side():
    ctx = context(_wide(), 64, squeeze=1.5)
    assert ctx.shape == (64, 96) and ctx.dtype == np.uint8
    tall = context(_wide().transpose(Image.Transpose.ROTATE_90), 64, squeeze=1.5)
    assert tall.shape == (96, 64)
    assert context(Image.new("RGB", (80, 70)), 64, squeeze=1.5).shape == (64, 73)


def test_random_views_are_square_varied_and_repeatable():
    ctx = context(_wide(), 64, squeeze=1.6)
    views = [random_view(ctx, 48, np.random.default_rng(seed), AUG) for seed in range(8)]
    assert all(v.shape == (48, 48) and v.dtype == np.uint8 for v in views)
    assert len({v.tobytes() for v in views}) == 8
    again = random_view(ctx, 48, np.random.default_rng(3), AUG)
    assert np.array_equal(again, views[3])


def test_squeeze_shows_more_of_the_width_than_the_centre_crop():
    ctx = context(_wide(), 64, squeeze=2.0)  # left-to-right ramp: the columns' spread is the field of view
    plain = NO_AUGMENTATION

    def spread(view: np.ndarray) -> int:
        return int(view[:, -1].mean()) - int(view[:, 0].mean())

    centre = spread(random_view(ctx, 32, np.random.default_rng(0), plain))
    ratios = [spread(random_view(ctx, 32, np.random.default_rng(s), {**plain, "squeeze": 2.0})) / centre
              for s in range(20)]  # fmt: skip
    assert min(ratios) > 0.97 and max(ratios) > 1.7


def test_a_view_without_augmentation_is_what_serving_sees():
    noise = np.random.default_rng(0).integers(0, 255, (300, 520), dtype=np.uint8)
    image = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(8))
    ctx = context(image, context_side(64, NO_AUGMENTATION), squeeze=1.6)
    view = random_view(ctx, 64, np.random.default_rng(0), NO_AUGMENTATION).astype(float)
    assert np.abs(view - prepare(image, 64, "crop")).mean() < 1.0


def test_contexts_round_trip(tmp_path: Path):
    contexts = [np.full((8, 12), 1, np.uint8), np.full((10, 8), 2, np.uint8)]
    save_contexts(tmp_path / "train_context.npz", contexts, np.array([0, 1]))
    loaded, y = load_contexts(str(tmp_path))
    assert [c.shape for c in loaded] == [(8, 12), (10, 8)] and y.tolist() == [0, 1]
    assert all(np.array_equal(a, b) for a, b in zip(loaded, contexts, strict=True))


def test_balanced_order_reaches_parity_and_keeps_every_example():
    y = np.array([0] * 9 + [1] * 3)
    order = balanced_order(y, np.random.default_rng(0), balance=True)
    assert np.bincount(y[order]).tolist() == [9, 9]
    assert set(order.tolist()) == set(range(12))
    assert sorted(balanced_order(y, np.random.default_rng(0), balance=False).tolist()) == list(range(12))


def test_bootstrap_intervals_contain_the_estimate_and_repeat():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 100)
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, 200), 0, 1)
    point = binary_metrics(y, p, 0.5)
    intervals = bootstrap_intervals(y, p, 0.5, resamples=300)
    assert set(intervals) == set(REPORTED)
    for name, (low, high) in intervals.items():
        assert low <= point[name] <= high and high - low < 0.3
    assert bootstrap_intervals(y, p, 0.5, resamples=300) == intervals


def test_bootstrap_resamples_patients_not_images():
    # 20 patients with 10 identical images each: only 20 independent observations.
    rng = np.random.default_rng(1)
    y_patient = np.array([0, 1] * 10)
    p_patient = np.clip(y_patient * 0.3 + rng.uniform(0, 0.7, 20), 0, 1)
    y, p = np.repeat(y_patient, 10), np.repeat(p_patient, 10)
    patients = np.repeat(np.arange(20), 10)
    by_image = bootstrap_intervals(y, p, 0.5, resamples=300)
    by_patient = bootstrap_intervals(y, p, 0.5, patients, resamples=300)
    for name in ("auc", "sensitivity", "specificity"):
        width = {k: v[name][1] - v[name][0] for k, v in (("image", by_image), ("patient", by_patient))}
        assert width["patient"] > 2 * width["image"], name
