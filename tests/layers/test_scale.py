"""Scale: one learnable scalar multiplier (the per-level regression scale)."""

import numpy as np
import tensorflow as tf

from keras_gfocal.layers.scale import Scale


def test_scale_multiplies_by_its_scalar_and_learns_it():
    x = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    layer = Scale(initial_value=1.5)
    np.testing.assert_allclose(np.asarray(layer(x)), 1.5 * x)
    assert len(layer.trainable_weights) == 1 and layer.trainable_weights[0].shape == ()
    layer.trainable_weights[0].assign(-0.25)
    np.testing.assert_allclose(np.asarray(layer(x)), -0.25 * x)
    # d(sum(w * x * g)) / dw = sum(x * g)
    g = np.array([[2.0, 1.0], [-1.0, 0.5]], np.float32)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x) * g)
    grad = tape.gradient(y, layer.trainable_weights[0])
    np.testing.assert_allclose(float(grad), float(np.sum(x * g)), rtol=1e-6)


def test_scale_default_is_one():
    layer = Scale()
    x = np.full((2, 3), 4.0, np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    assert float(layer.trainable_weights[0]) == 1.0


def test_scale_config_round_trip():
    layer = Scale(initial_value=0.75, name="s3")
    clone = Scale.from_config(layer.get_config())
    assert clone.initial_value == 0.75 and clone.name == "s3"
    np.testing.assert_allclose(np.asarray(clone(np.ones((1,), np.float32))), [0.75])


def test_scale_keeps_any_shape_and_the_input_dtype():
    layer = Scale(initial_value=2.0, dtype="mixed_float16")
    x = np.arange(24, dtype=np.float16).reshape(1, 2, 3, 4)
    y = layer(x)
    assert tuple(y.shape) == x.shape and y.dtype == "float16"
    assert layer.trainable_weights[0].dtype == "float32"  # the scalar itself stays float32
    np.testing.assert_array_equal(np.asarray(y), 2 * x)
