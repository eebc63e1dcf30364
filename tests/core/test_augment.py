"""pneumo.augment: context images and random views for online augmentation."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from pneumo.augment import context, context_side, random_view
from pneumo.config import load_params
from pneumo.images import prepare

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


def spread(view: np.ndarray) -> int:
    """On a left-to-right ramp, the columns' spread: how much of the width a view shows."""
    return int(view[:, -1].mean()) - int(view[:, 0].mean())


def test_squeeze_shows_more_of_the_width_than_the_centre_crop():
    ctx = context(_wide(), 64, squeeze=2.0)  # left-to-right ramp: the columns' spread is the field of view
    plain = NO_AUGMENTATION
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


def test_widen_shows_less_of_the_width_as_a_squashed_film_widened_back():
    square_film = _wide(200, 200)  # a film already squashed to a square, as many exports are
    ctx = context(square_film, 64, squeeze=1.6, square_mode="stretch")
    plain = NO_AUGMENTATION
    whole = spread(random_view(ctx, 32, np.random.default_rng(0), plain))
    ratios = [spread(random_view(ctx, 32, np.random.default_rng(s), {**plain, "widen": 1.6})) / whole
              for s in range(20)]  # fmt: skip
    assert max(ratios) < 1.03 and min(ratios) < 1 / 1.4  # never wider, sometimes much narrower


def test_stretched_and_padded_contexts_are_the_square_film_inference_sees():
    noise = np.random.default_rng(0).integers(0, 255, (300, 520), dtype=np.uint8)
    image = Image.fromarray(noise).filter(ImageFilter.GaussianBlur(8))
    for mode in ("stretch", "pad"):
        ctx = context(image, context_side(64, NO_AUGMENTATION), squeeze=1.6, square_mode=mode)
        assert ctx.shape == (64, 64)
        view = random_view(ctx, 64, np.random.default_rng(0), NO_AUGMENTATION).astype(float)
        assert np.abs(view - prepare(image, 64, mode)).mean() < 1.5
