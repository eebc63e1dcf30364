"""Why an input is not a usable image: one exception per HTTP answer the service gives it."""

from __future__ import annotations


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


class UnsupportedImage(ImageError):
    """Empty, not an image, or an image format that is not accepted (415)."""


class ImageTooLarge(ImageError):
    """More pixels than allowed, decompression bombs included (413)."""


class CorruptImage(ImageError):
    """A recognised image format whose data is truncated or damaged (422)."""


class DegenerateImage(ImageError):
    """Decoded, but too small or too elongated to be a chest X-ray (422)."""
