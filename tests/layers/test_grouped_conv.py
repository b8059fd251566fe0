"""``GroupedConv2D``: Keras' grouped convolution computed as one plain convolution per group."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf

from keras_gfocal.layers import GroupedConv2D


def _grouped_numpy(x, kernel, groups, stride, pad):
    """Output group ``g`` is input group ``g`` convolved with kernel group ``g``."""
    xs, ks = np.split(x, groups, axis=-1), np.split(kernel, groups, axis=-1)
    return np.concatenate([ref.conv2d_nhwc(a, k, stride, pad) for a, k in zip(xs, ks)], axis=-1)


@pytest.mark.parametrize("groups, strides", [(4, 1), (4, 2), (8, 2)])
def test_matches_a_numpy_grouped_convolution_eager_and_in_a_graph(groups, strides):
    rng = np.random.default_rng(groups + strides)
    x = rng.normal(size=(2, 9, 11, 16)).astype(np.float32)
    layer = GroupedConv2D(24, 3, strides=strides, padding="valid", groups=groups, use_bias=True)
    layer.build(x.shape)
    layer.kernel.assign(rng.normal(size=(3, 3, 16 // groups, 24)).astype(np.float32))
    layer.bias.assign(rng.normal(size=(24,)).astype(np.float32))
    expected = _grouped_numpy(x.astype(np.float64), np.asarray(layer.kernel, np.float64), groups, strides, 0)
    expected += np.asarray(layer.bias)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(tf.function(layer)(x)), expected, rtol=1e-5, atol=1e-5)


def test_same_variables_and_outputs_as_keras_conv2d_and_a_config_round_trip():
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 32)).astype(np.float32)
    keras_conv = keras.layers.Conv2D(32, 3, padding="same", groups=8, use_bias=False)
    ours = GroupedConv2D(32, 3, padding="same", groups=8, use_bias=False, name="g")
    keras_conv.build(x.shape)
    ours.build(x.shape)
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in keras_conv.weights] == [(3, 3, 4, 32)]
    ours.kernel.assign(keras_conv.kernel)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(keras_conv(x)), rtol=1e-5, atol=1e-5)
    clone = GroupedConv2D.from_config(ours.get_config())
    assert clone.get_config() == ours.get_config() and clone.groups == 8


def test_one_group_is_a_plain_convolution():
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 4)).astype(np.float32)
    layer = GroupedConv2D(5, 3, padding="valid", use_bias=False)
    layer.build(x.shape)
    expected = ref.conv2d_nhwc(x.astype(np.float64), np.asarray(layer.kernel, np.float64))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
