"""Grad-CAM with TensorFlow, for versions whose ONNX graph does not carry the map (trained before
it was exported, or with a head that has no closed form): where in the X-ray the model looked."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pneumo.contract import FEATURE_POOL
from pneumo.serving.heatmap import overlay_png


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

    def cam(self, prepared: np.ndarray) -> np.ndarray:
        """The coarse map in [0, 1] on the feature map's grid."""
        return self._maps(tf.constant(prepared[np.newaxis, :, :, np.newaxis], tf.float32)).numpy()

    def overlay_png(self, prepared: np.ndarray) -> str:
        """The X-ray with the heat map blended over it, as a base64 PNG."""
        return overlay_png(prepared, self.cam(prepared))
