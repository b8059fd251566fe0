"""GFLHead: output shapes per level, the numbers its docstring promises (prior bias, joint
score = sigmoid(cls) x DGQP quality, per-level scale, row-major rows), config round trip."""

import math

import keras
import numpy as np
import pytest

from keras_gfocal.layers.gfl_head import GFLHead

SIZES = ((8, 6), (4, 3))


def _features(channels=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, h, w, channels)).astype("float32") for h, w in SIZES]


def _head(**kwargs):
    settings = dict(num_classes=3, channels=8, stacked_convs=2, num_levels=2, reg_max=4, groups=4)
    head = GFLHead(**{**settings, **kwargs})
    head(_features())
    return head


def _zero_kernels(*layers):
    for layer in layers:
        layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))


@pytest.mark.parametrize("dgqp", [True, False])
def test_output_shapes_per_level(dgqp):
    out = _head(dgqp=dgqp)(_features())
    assert [tuple(c.shape) for c in out["cls"]] == [(2, h * w, 3) for h, w in SIZES]
    assert [tuple(r.shape) for r in out["reg"]] == [(2, h * w, 4 * 5) for h, w in SIZES]
    assert all(keras.backend.standardize_dtype(t.dtype) == "float32" for t in out["cls"] + out["reg"])


def test_prior_bias_gives_probability_001_and_joint_score_is_its_product_with_quality():
    v1 = _head(dgqp=False)
    _zero_kernels(v1.cls_out)
    logits = np.concatenate([np.asarray(c) for c in v1(_features())["cls"]], axis=1)
    np.testing.assert_allclose(logits, -math.log(0.99 / 0.01), rtol=1e-6)  # -4.595: sigmoid = 0.01

    v2 = _head(dgqp=True)
    _zero_kernels(v2.cls_out, v2.quality.hidden, v2.quality.out)
    v2.quality.out.bias.assign([0.7])  # quality = sigmoid(0.7) whatever the distributions
    joint = np.concatenate([np.asarray(c) for c in v2(_features())["cls"]], axis=1)
    np.testing.assert_allclose(joint, 0.01 / (1.0 + math.exp(-0.7)), rtol=1e-5)


def test_each_level_has_its_own_regression_scale():
    head = _head()
    _zero_kernels(head.reg_out)
    head.reg_out.bias.assign(np.full((20,), 0.5, "float32"))
    head.scales[1].scale.assign(-3.0)
    reg = head(_features())["reg"]
    np.testing.assert_allclose(np.asarray(reg[0]), 0.5)
    np.testing.assert_allclose(np.asarray(reg[1]), -1.5)


def test_rows_are_the_points_in_row_major_order():
    # No tower convs: the cls conv reads the FPN map itself; a kernel whose only
    # non-zero tap is the centre of input channel 0 copies that channel out.
    head = GFLHead(num_classes=1, channels=4, stacked_convs=0, num_levels=2, reg_max=4, groups=1, dgqp=False)
    features = [np.zeros((1, h, w, 4), "float32") for h, w in SIZES]
    for f, (h, w) in zip(features, SIZES):
        f[0, :, :, 0] = np.arange(h * w).reshape(h, w)  # the value of cell (y, x) is y * w + x
    head(features)
    kernel = np.zeros(head.cls_out.kernel.shape, "float32")
    kernel[1, 1, 0, 0] = 1.0
    head.cls_out.kernel.assign(kernel)
    head.cls_out.bias.assign([0.0])
    for level, (h, w) in zip(head(features)["cls"], SIZES):
        np.testing.assert_array_equal(np.asarray(level)[0, :, 0], np.arange(h * w))


def test_config_round_trip_gives_the_same_layer():
    head = _head(dgqp_topk=3, dgqp_hidden_units=16, prior_prob=0.02)
    config = head.get_config()
    clone = GFLHead.from_config(config)
    assert clone.get_config() == config
    clone(_features())
    clone.set_weights(head.get_weights())
    for a, b in zip(head(_features(seed=1))["cls"], clone(_features(seed=1))["cls"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head)).get_config() == config


def test_wrong_number_of_levels_is_refused():
    with pytest.raises(ValueError, match="expects 2 feature maps, got 1"):
        _head()(_features()[:1])
