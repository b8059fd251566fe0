"""Reference tests for keras_gfocal.layers.DGQP (Distribution-Guided Quality Predictor)."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from gradient_check import input_and_weight_gradients

from keras_gfocal.layers import DGQP

RTOL = 1e-5
ATOL = 1e-6


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def random_weights(rng, in_dim, hidden, x=None, **ref_kw):
    """Random weights, deliberately large so that every feature position matters.

    With x given, b2 is shifted so that the median output on x is 0.5: the outputs then
    spread over (0, 1) instead of saturating, which keeps the comparison sensitive.
    """
    w = [
        rng.normal(0, 3.0, size=(in_dim, hidden)).astype(np.float32),
        rng.normal(0, 0.5, size=(hidden,)).astype(np.float32),
        rng.normal(0, 1.0, size=(hidden, 1)).astype(np.float32),
        np.zeros((1,), np.float32),
    ]
    if x is not None:
        f = ref.dgqp_features(x, **ref_kw)
        z = np.maximum(f @ w[0] + w[1], 0.0) @ w[2]
        w[3] = np.array([-np.median(z)], np.float32)
    return w


def build(layer, reg_max, batch=2, anchors=7):
    x = np.zeros((batch, anchors, 4 * (reg_max + 1)), np.float32)
    layer(x)
    return layer


def test_feature_layout_hand_values():
    # DGQP.statistics on hand-made distributions, against features worked out by hand:
    # per edge the top-k probabilities in descending order, then their mean, edge-major.
    n1 = 17
    logits = np.full((4 * n1,), -1e9, np.float32)
    # edge 0 (l): bins 3, 4 with probabilities 0.25 / 0.75 -> top4 (.75, .25, 0, 0), mean .25
    logits[0 * n1 + 3] = np.log(0.25)
    logits[0 * n1 + 4] = np.log(0.75)
    # edge 1 (t): one-hot on bin 10 -> (1, 0, 0, 0), mean .25
    logits[1 * n1 + 10] = 0.0
    # edge 2 (r): bins 0, 8, 16, 5, 12 with .1, .4, .2, .25, .05 -> (.4, .25, .2, .1), mean .2375
    for b, p in ((0, 0.1), (8, 0.4), (16, 0.2), (5, 0.25), (12, 0.05)):
        logits[2 * n1 + b] = np.log(p)
    # edge 3 (b): uniform over all 17 bins -> (1/17,) * 4, mean 1/17
    logits[3 * n1 : 4 * n1] = 0.0
    u = 1.0 / 17.0
    expected = [0.75, 0.25, 0, 0, 0.25, 1, 0, 0, 0, 0.25, 0.4, 0.25, 0.2, 0.1, 0.2375] + [u] * 5
    x = np.stack([logits, np.roll(logits, -n1)])[None]  # [1, 2, 68]: the second point's edges rotated
    got = to_np(DGQP().statistics(x))
    assert got.shape == (1, 2, 20)
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[0, 1], expected[5:] + expected[:5], rtol=1e-6, atol=1e-7)
    # topk 2 without the mean: the first two of each edge's values.
    got = to_np(DGQP(topk=2, add_mean=False).statistics(logits[None]))
    np.testing.assert_allclose(got[0], [0.75, 0.25, 1, 0, 0.4, 0.25, u, u], rtol=1e-6, atol=1e-7)
    # reg_max 3 (4 bins per edge), topk 3 with the mean, on a [2, 1, 16] batch.
    small = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.25] * 4, [0.05, 0.05, 0.6, 0.3]]))
    x = np.stack([small.reshape(-1), small[::-1].reshape(-1)])[:, None].astype(np.float32)
    rows = [[0.4, 0.3, 0.2, 0.3], [0.7, 0.1, 0.1, 0.3], [0.25, 0.25, 0.25, 0.25], [0.6, 0.3, 0.05, 0.95 / 3]]
    got = to_np(DGQP(reg_max=3, topk=3).statistics(x))
    assert got.shape == (2, 1, 16)
    np.testing.assert_allclose(got[0, 0], np.concatenate(rows), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got[1, 0], np.concatenate(rows[::-1]), rtol=1e-5, atol=1e-7)


def test_dgqp_default_config_against_numpy():
    rng = np.random.default_rng(50)
    layer = build(DGQP(), 16)
    shapes = [w.shape for w in layer.get_weights()]
    assert shapes == [(20, 64), (64,), (64, 1), (1,)]
    x = rng.normal(0, 2.0, size=(2, 11, 68)).astype(np.float32)
    weights = random_weights(rng, 20, 64, x)
    layer.set_weights(weights)
    got = to_np(layer(x))
    assert got.shape == (2, 11, 1)
    exp = ref.dgqp(x, *weights)
    np.testing.assert_allclose(got, exp, rtol=RTOL, atol=ATOL)
    # the outputs spread over (0, 1), so the comparison is sensitive
    assert exp.min() < 0.2 and exp.max() > 0.8


def test_dgqp_features_sorted_descending_and_edge_major():
    # One informative feature at a time: W1 has a single non-zero row, so the output depends
    # on exactly one feature position; compare each position against the reference.
    rng = np.random.default_rng(51)
    layer = build(DGQP(), 16)
    x = rng.normal(0, 2.0, size=(1, 5, 68)).astype(np.float32)
    feats = ref.dgqp_features(x)  # [1, 5, 20]
    for pos in range(20):
        w1 = np.zeros((20, 64), np.float32)
        w1[pos, 0] = 1.0
        b1 = np.zeros((64,), np.float32)
        w2 = np.zeros((64, 1), np.float32)
        w2[0, 0] = 4.0
        b2 = np.array([-1.0], np.float32)
        layer.set_weights([w1, b1, w2, b2])
        got = to_np(layer(x))[..., 0]
        exp = 1.0 / (1.0 + np.exp(-(4.0 * feats[..., pos] - 1.0)))
        np.testing.assert_allclose(got, exp, rtol=RTOL, atol=ATOL, err_msg=f"feature position {pos}")


def test_dgqp_mean_is_over_topk_values_only():
    # uniform edge: top-4 = 1/17 each and their mean is 1/17; if the mean were over all 17
    # bins it would also be 1/17, so use a peaked edge: probs (0.5, 0.3, 0.1, 0.05, 0.05/13 ...)
    probs = np.array([0.5, 0.3, 0.1, 0.05] + [0.05 / 13] * 13)
    edge = np.log(probs).astype(np.float32)
    x = np.tile(edge, 4)[None, None]  # [1, 1, 68]
    layer = build(DGQP(), 16, batch=1, anchors=1)
    w1 = np.zeros((20, 64), np.float32)
    w1[4, 0] = 1.0  # the mean of edge 0
    w2 = np.zeros((64, 1), np.float32)
    w2[0, 0] = 1.0
    layer.set_weights([w1, np.zeros(64, np.float32), w2, np.zeros(1, np.float32)])
    got = float(to_np(layer(x))[0, 0, 0])
    mean_topk = (0.5 + 0.3 + 0.1 + 0.05) / 4  # 0.2375 (mean over all bins would be 1/17)
    np.testing.assert_allclose(got, 1.0 / (1.0 + np.exp(-mean_topk)), rtol=RTOL)


def test_dgqp_without_mean():
    rng = np.random.default_rng(52)
    layer = build(DGQP(add_mean=False), 16)
    assert [w.shape for w in layer.get_weights()] == [(16, 64), (64,), (64, 1), (1,)]
    x = rng.normal(0, 2.0, size=(2, 9, 68)).astype(np.float32)
    weights = random_weights(rng, 16, 64, x, add_mean=False)
    layer.set_weights(weights)
    np.testing.assert_allclose(to_np(layer(x)), ref.dgqp(x, *weights, add_mean=False), rtol=RTOL, atol=ATOL)


def test_dgqp_topk_1():
    rng = np.random.default_rng(53)
    layer = build(DGQP(topk=1), 16)
    assert [w.shape for w in layer.get_weights()] == [(8, 64), (64,), (64, 1), (1,)]
    x = rng.normal(0, 2.0, size=(2, 9, 68)).astype(np.float32)
    weights = random_weights(rng, 8, 64, x, topk=1)
    layer.set_weights(weights)
    np.testing.assert_allclose(to_np(layer(x)), ref.dgqp(x, *weights, topk=1), rtol=RTOL, atol=ATOL)
    layer1 = build(DGQP(topk=1, add_mean=False), 16)
    assert [w.shape for w in layer1.get_weights()] == [(4, 64), (64,), (64, 1), (1,)]
    w = random_weights(rng, 4, 64, x, topk=1, add_mean=False)
    layer1.set_weights(w)
    np.testing.assert_allclose(to_np(layer1(x)), ref.dgqp(x, *w, topk=1, add_mean=False), rtol=RTOL, atol=ATOL)


def test_dgqp_other_reg_max_and_hidden_units():
    rng = np.random.default_rng(54)
    layer = build(DGQP(reg_max=7, topk=3, hidden_units=8), 7)
    assert [w.shape for w in layer.get_weights()] == [(16, 8), (8,), (8, 1), (1,)]
    x = rng.normal(0, 2.0, size=(3, 4, 32)).astype(np.float32)
    weights = random_weights(rng, 16, 8, x, reg_max=7, topk=3)
    layer.set_weights(weights)
    np.testing.assert_allclose(to_np(layer(x)), ref.dgqp(x, *weights, reg_max=7, topk=3), rtol=RTOL, atol=ATOL)


def test_dgqp_get_config_round_trip():
    rng = np.random.default_rng(55)
    layer = build(DGQP(reg_max=16, topk=2, add_mean=False, hidden_units=32), 16)
    cfg = layer.get_config()
    assert cfg["reg_max"] == 16 and cfg["topk"] == 2
    assert cfg["add_mean"] is False and cfg["hidden_units"] == 32
    clone = DGQP.from_config(cfg)
    assert clone.get_config() == cfg
    build(clone, 16)
    x = rng.normal(0, 2.0, size=(2, 6, 68)).astype(np.float32)
    weights = random_weights(rng, 8, 32, x, topk=2, add_mean=False)
    layer.set_weights(weights)
    clone.set_weights(weights)
    got = to_np(clone(x))
    np.testing.assert_allclose(got, to_np(layer(x)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, ref.dgqp(x, *weights, topk=2, add_mean=False), rtol=RTOL, atol=ATOL)


def test_dgqp_default_initialisation_normal_0_01():
    # REFERENCE.md: DGQP weights N(0, 0.01) (biases zero, as mmdet's normal_init).
    # W1 has 1280 entries: the sample std of N(0, 0.01) lies within 0.01 +- 0.001 with
    # overwhelming probability (the standard error is 0.0002); a truncated normal would not.
    w1, b1, w2, b2 = build(DGQP(), 16).get_weights()
    assert abs(float(np.mean(w1))) < 0.0015
    assert 0.009 < float(np.std(w1)) < 0.011
    np.testing.assert_array_equal(b1, 0.0)
    np.testing.assert_array_equal(b2, 0.0)
    assert float(np.max(np.abs(w2))) < 0.06 and float(np.std(w2)) > 0.005


def test_dgqp_output_in_unit_interval_and_finite_for_extreme_logits():
    layer = build(DGQP(), 16)
    x = np.zeros((1, 3, 68), np.float32)
    x[0, 0] = 1e4  # all equal but huge
    x[0, 1, ::17] = 80.0  # one-hot-like
    x[0, 2] = np.linspace(-80, 80, 68)
    out = to_np(layer(x))
    assert out.shape == (1, 3, 1)
    assert np.all(np.isfinite(out)) and np.all((out > 0) & (out < 1))
    w = layer.get_weights()
    np.testing.assert_allclose(out, ref.dgqp(x, *w), rtol=RTOL, atol=ATOL)


# ------------------------------------------- the GPU-delegate formulation is today's


def _top_k_formulation(layer, x):
    """The DGQP as written before the GPU rewrite: ``ops.top_k``, the mean of the
    top-k as a feature, the hidden Dense on all ``4 * (topk + 1)`` features."""
    ops = keras.ops
    n = layer.reg_max + 1
    probs = ops.softmax(ops.reshape(ops.convert_to_tensor(x), x.shape[:-1] + (4, n)), axis=-1)
    top, _ = ops.top_k(probs, k=layer.topk, sorted=True)
    if layer.add_mean:
        top = ops.concatenate([top, ops.mean(top, axis=-1, keepdims=True)], axis=-1)
    features = ops.reshape(top, x.shape[:-1] + (layer.num_features,))
    return ops.sigmoid(layer.out(layer.hidden(features)))


def _tied_logits(rng, shape):
    """Logits on a coarse grid: most edges have equal bins, some all 17 equal."""
    x = rng.integers(-2, 3, size=shape).astype(np.float32)
    x[..., :17] = 0.0  # the left edge of every point: a flat distribution
    return x


@pytest.mark.parametrize("kwargs", [{}, {"topk": 1}, {"topk": 3, "add_mean": False}, {"reg_max": 7, "topk": 2}])
def test_dgqp_equals_the_top_k_formulation_ties_included(kwargs):
    rng = np.random.default_rng(61)
    layer = DGQP(**kwargs)
    n1 = layer.reg_max + 1
    build(layer, layer.reg_max)
    for x in (rng.normal(0, 2.0, size=(2, 13, 4 * n1)).astype(np.float32), _tied_logits(rng, (2, 13, 4 * n1))):
        layer.set_weights(
            random_weights(
                rng,
                layer.num_features,
                layer.hidden_units,
                x,
                reg_max=layer.reg_max,
                topk=layer.topk,
                add_mean=layer.add_mean,
            )
        )
        expected = to_np(_top_k_formulation(layer, x))
        np.testing.assert_allclose(to_np(layer(x)), expected, rtol=RTOL, atol=1e-5)  # the folded mean: rounding
        # The features themselves: the top-k values bit for bit, the mean to rounding.
        features = to_np(layer.statistics(x)).reshape(x.shape[:-1] + (4, -1))
        top, _ = keras.ops.top_k(keras.ops.softmax(x.reshape(x.shape[:-1] + (4, n1)), axis=-1), k=layer.topk)
        np.testing.assert_array_equal(features[..., : layer.topk], to_np(top))
        if layer.add_mean:
            np.testing.assert_allclose(features[..., -1], to_np(top).mean(-1), rtol=1e-6)


def test_dgqp_gradients_equal_the_top_k_formulation():
    import tensorflow as tf

    rng = np.random.default_rng(62)
    layer = build(DGQP(), 16)
    x = tf.constant(rng.normal(0, 2.0, size=(2, 9, 68)).astype(np.float32))
    layer.set_weights(random_weights(rng, 20, 64, x.numpy()))
    upstream = tf.constant(rng.normal(size=(2, 9, 1)).astype(np.float32))
    grads = [
        input_and_weight_gradients(fn, x, upstream, layer.trainable_weights)
        for fn in (layer, lambda t: _top_k_formulation(layer, t))
    ]
    for got, expected in zip(*grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-6)


def test_dgqp_graph_has_no_top_k_and_no_mean():
    import tensorflow as tf

    layer = build(DGQP(), 16)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec([1, 100, 68], tf.float32)).graph
    kinds = {op.type for op in graph.get_operations()}
    assert not kinds & {"TopKV2", "Mean", "Sum"}, kinds
    assert {"Maximum", "Minimum", "Softmax"} <= kinds
