"""Grad-CAM: where in the X-ray the model looked, as a heat map over the image."""

from __future__ import annotations

import base64
import io

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from pneumo.contract import FEATURE_POOL


class GradCam:
    """Gradient-weighted class activation maps for a model with a :data:`FEATURE_POOL` layer."""

    def __init__(self, model: keras.Model) -> None:
        pool = model.get_layer(FEATURE_POOL)
        self._inner = keras.Model(model.inputs, [pool.input, model.outputs[0]])
        size = model.input_shape[1]
        self._maps = tf.function(
            self._compute, input_signature=[tf.TensorSpec((1, size, size, 1), tf.float32)]
        )

    @classmethod
    def for_model(cls, model: keras.Model) -> GradCam | None:
        """A Grad-CAM for ``model``, or None when the model has no :data:`FEATURE_POOL` layer."""
        try:
            return cls(model)
        except ValueError:
            return None

    def _compute(self, image: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            feature_map, output = self._inner(image, training=False)
            score = output[:, 0]
        gradients = tape.gradient(score, feature_map)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))[0]
        return cam / (tf.reduce_max(cam) + 1e-8)

    def heatmap(self, prepared: np.ndarray) -> np.ndarray:
        """The map in [0, 1], upsampled to the prepared image's size."""
        image = tf.constant(prepared[np.newaxis, :, :, np.newaxis], tf.float32)
        cam = self._maps(image).numpy()
        resized = Image.fromarray((cam * 255).astype(np.uint8)).resize(prepared.shape[::-1], Image.BILINEAR)
        return np.asarray(resized, np.float32) / 255.0

    def overlay_png(self, prepared: np.ndarray) -> str:
        """The X-ray with the heat map blended over it, as a base64 PNG."""
        heat = self.heatmap(prepared)
        gray = prepared.astype(np.float32)[..., np.newaxis].repeat(3, axis=-1)
        colour = np.stack([heat, heat**2 * 0.8, (1 - heat) * 0.2], axis=-1) * 255  # dark to red-yellow
        alpha = 0.55 * heat[..., np.newaxis]
        blended = (gray * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(blended, "RGB").save(buffer, "PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
