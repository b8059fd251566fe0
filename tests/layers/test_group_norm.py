"""keras_gfocal.layers.GroupNormalization: Keras' GroupNormalization on rank-4 ops only."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from gradient_check import input_and_weight_gradients

from keras_gfocal import GFocalDetector
from keras_gfocal.layers import GroupNormalization, backbone, gfl_head


def _pair(groups, channels, rng, epsilon=1e-5):
    """Keras' layer and ours, built, with the same random gamma and beta."""
    theirs = keras.layers.GroupNormalization(groups=groups, epsilon=epsilon)
    ours = GroupNormalization(groups=groups, epsilon=epsilon)
    for layer in (theirs, ours):
        layer.build((None, None, None, channels))
    weights = [rng.normal(1.0, 0.5, channels).astype("float32"), rng.normal(0.0, 0.5, channels).astype("float32")]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return theirs, ours


@pytest.mark.parametrize(
    "groups, shape",
    [
        (32, (2, 9, 7, 64)),  # the head's 2 channels per group, an odd map
        (8, (1, 16, 16, 64)),  # the tiny backbone's 8 channels per group
        (32, (1, 5, 6, 256)),  # the reference head
        (1, (2, 4, 3, 12)),  # layer norm over the map
        (-1, (2, 4, 3, 12)),  # instance norm
        (4, (1, 1, 1, 16)),  # a 1 x 1 map (P7 of a small image)
    ],
)
def test_equals_keras_group_normalization(groups, shape):
    rng = np.random.default_rng(sum(shape) + groups)
    theirs, ours = _pair(groups, shape[-1], rng)
    # An offset and a spread per channel, so that a wrong reduction axis or group shows.
    x = (rng.normal(size=shape) * rng.uniform(0.5, 4, shape[-1]) + rng.normal(3, 2, shape[-1])).astype("float32")
    expected = np.asarray(theirs(x))
    got = np.asarray(ours(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)
    assert got.dtype == np.float32 and got.shape == shape


def test_each_image_and_group_is_normalised_on_its_own():
    rng = np.random.default_rng(1)
    _, ours = _pair(4, 16, rng)
    x = rng.normal(size=(2, 6, 5, 16)).astype("float32")
    y = np.asarray(ours(x))
    # The second image, or another group of channels, changed: nothing else moves.
    x2 = x.copy()
    x2[1] *= 10.0
    x2[0, ..., 4:8] += 7.0
    y2 = np.asarray(ours(x2))
    np.testing.assert_allclose(
        y2[0, ..., [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]],
        y[0, ..., [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]],
        rtol=1e-6,
        atol=1e-6,
    )
    # With gamma = 1 and beta = 0, every group of every image has mean 0 and variance 1.
    ours.set_weights([np.ones(16, "float32"), np.zeros(16, "float32")])
    groups = np.asarray(ours(x2)).reshape(2, 6 * 5, 4, 4).transpose(0, 2, 1, 3).reshape(2, 4, -1)
    np.testing.assert_allclose(groups.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(groups.var(-1), 1.0, rtol=1e-3)


def test_gradients_equal_keras():
    rng = np.random.default_rng(2)
    theirs, ours = _pair(8, 32, rng)
    x = tf.constant((rng.normal(size=(2, 7, 5, 32)) * 2 + 1).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 7, 5, 32)).astype("float32"))
    grads = [input_and_weight_gradients(layer, x, upstream, layer.trainable_weights) for layer in (theirs, ours)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_unknown_height_and_width_in_a_graph():
    rng = np.random.default_rng(3)
    theirs, ours = _pair(32, 64, rng)
    fn = tf.function(ours, input_signature=[tf.TensorSpec([None, None, None, 64], tf.float32)])
    x = rng.normal(size=(1, 10, 3, 64)).astype("float32")
    np.testing.assert_allclose(fn(x).numpy(), np.asarray(theirs(x)), rtol=1e-5, atol=2e-5)


def test_weights_and_config_are_keras():
    theirs = keras.layers.GroupNormalization(groups=4, epsilon=1e-5, center=False)
    ours = GroupNormalization.from_config(theirs.get_config())
    ours.build((None, 3, 3, 8))
    assert [w.name for w in ours.weights] == ["gamma"] and ours.epsilon == 1e-5
    full = GroupNormalization(groups=4, epsilon=1e-5, name="x_gn")
    full.build((None, 3, 3, 8))
    assert [(w.name, w.shape) for w in full.weights] == [("gamma", (8,)), ("beta", (8,))]
    clone = GroupNormalization.from_config(full.get_config())
    assert clone.get_config() == full.get_config()
    assert keras.saving.get_registered_name(GroupNormalization) == "keras_gfocal>GroupNormalization"


def _numpy_group_norm(x, groups, epsilon, gamma=None, beta=None):
    """Group norm of ``[B, H, W, C]`` in float64: each image's groups of ``C / groups`` channels
    normalised over height, width and the group's channels, then ``* gamma + beta`` per channel."""
    b, h, w, c = x.shape
    grouped = x.astype(np.float64).reshape(b, h, w, groups, c // groups)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    variance = ((grouped - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    y = ((grouped - mean) / np.sqrt(variance + epsilon)).reshape(x.shape)
    if gamma is not None:
        y = y * gamma
    return y + beta if beta is not None else y


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
def test_center_and_scale_against_numpy(center, scale):
    rng = np.random.default_rng(5)
    layer = GroupNormalization(groups=4, epsilon=1e-3, center=center, scale=scale, axis=3)
    layer.build((None, 5, 6, 16))
    assert [w.name for w in layer.weights] == ["gamma"] * scale + ["beta"] * center
    gamma = rng.normal(1.0, 0.5, 16).astype("float32") if scale else None
    beta = rng.normal(0.0, 0.5, 16).astype("float32") if center else None
    layer.set_weights([w for w in (gamma, beta) if w is not None])
    x = (rng.normal(size=(2, 5, 6, 16)) * rng.uniform(0.5, 4, 16) + rng.normal(3, 2, 16)).astype("float32")
    got = np.asarray(layer(x))
    np.testing.assert_allclose(got, _numpy_group_norm(x, 4, 1e-3, gamma, beta), rtol=1e-5, atol=2e-5)
    assert got.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"groups": 3}, "cannot be split into 3 groups"),
        ({"groups": 16}, "8 channels cannot be split into 16 groups"),
        ({"groups": 0}, "groups must be a positive int or -1, got 0"),
        ({"groups": -2}, "groups must be a positive int or -1, got -2"),
        ({"groups": 4.0}, "groups must be a positive int or -1, got 4.0"),
        ({"groups": "4"}, "groups must be a positive int or -1, got '4'"),
        ({"axis": 1}, "channels-last"),
        ({"axis": -2}, "got axis=-2"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GroupNormalization(**kwargs).build((None, 4, 4, 8))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((None, 4, 8), r"expects \[B, H, W, C\] inputs, got shape \(None, 4, 8\)"),
        ((None, 2, 4, 4, 8), r"expects \[B, H, W, C\] inputs"),
        ((None, 4, 4, None), r"needs a known channel count, got shape \(None, 4, 4, None\)"),
    ],
)
def test_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        GroupNormalization(groups=4).build(shape)


def _small_detector():
    return GFocalDetector(
        backbone.TinyBackbone(base_width=8), num_classes=2, fpn_channels=16, head_channels=16, stacked_convs=1, groups=4
    )


def test_keras_files_written_with_keras_group_normalization_load(tmp_path, monkeypatch):
    # Files written before this layer existed hold Keras' GroupNormalization in
    # the head and the tiny backbone (and an UpSampling2D in the FPN).
    images = np.random.default_rng(4).normal(size=(1, 64, 96, 3)).astype("float32")
    with monkeypatch.context() as patch:
        patch.setattr(gfl_head, "GroupNormalization", keras.layers.GroupNormalization)
        patch.setattr(backbone, "GroupNormalization", keras.layers.GroupNormalization)
        old = _small_detector()
        old.fpn.upsample = keras.layers.UpSampling2D(2)
        old.build(images.shape)
        assert isinstance(old.head.cls_tower[1], keras.layers.GroupNormalization)
        for w in old.weights:  # gamma and beta away from 1 and 0, so that loading them matters
            w.assign(np.random.default_rng(len(w.path)).normal(0.5, 0.3, w.shape).astype("float32"))
        expected = old(images)
        path = os.path.join(tmp_path, "old.keras")
        old.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.head.cls_tower[1]) is GroupNormalization
    assert type(loaded.backbone.stages[0][1]) is GroupNormalization
    got = loaded(images)
    for key in ("cls_scores", "reg_logits"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), rtol=1e-4, atol=1e-4)
