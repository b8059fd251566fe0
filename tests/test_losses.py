"""Reference tests for keras_gfocal.losses (QFL, DFL, GIoU loss).

Expected values come from hand computations (math module) and from the independent NumPy
implementation in tests/numpy_reference.py, both written from REFERENCE.md.
"""

import math

import keras
import numpy as np
import numpy_reference as ref
import pytest

from keras_gfocal import losses

RTOL = 1e-5
ATOL = 1e-6


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


# ---------------------------------------------------------------------------
# Quality Focal Loss
# ---------------------------------------------------------------------------


def _hand_qfl_fixture():
    """Three rows, two classes, probabilities; hand-computed with the math module.

    row 0: positive of class 1 with IoU target 0.8, p = (0.2, 0.6)
        class 0 (negative):  -log(1 - 0.2) * 0.2**2
        class 1 (positive):  -(0.8 log 0.6 + 0.2 log 0.4) * |0.8 - 0.6|**2
    row 1: background (label -1), p = (0.3, 0.1): -log(0.7) 0.09 - log(0.9) 0.01
    row 2: label C = 2 is background too, p = (0.5, 0.05)
    """
    pred = np.array([[0.2, 0.6], [0.3, 0.1], [0.5, 0.05]], dtype=np.float32)
    labels = np.array([1, -1, 2], dtype=np.int32)
    scores = np.array([0.8, 0.9, 0.7], dtype=np.float32)  # ignored for rows 1 and 2
    row0 = -math.log(0.8) * 0.04 + -(0.8 * math.log(0.6) + 0.2 * math.log(0.4)) * 0.2**2
    row1 = -math.log(0.7) * 0.09 + -math.log(0.9) * 0.01
    row2 = -math.log(0.5) * 0.25 + -math.log(0.95) * 0.0025
    return pred, labels, scores, np.array([row0, row1, row2])


def test_numpy_reference_qfl_matches_hand_values():
    pred, labels, scores, expected = _hand_qfl_fixture()
    np.testing.assert_allclose(ref.quality_focal_loss(pred, labels, scores), expected, rtol=1e-6)


def test_qfl_hand_fixture_positive_and_background_rows():
    pred, labels, scores, expected = _hand_qfl_fixture()
    got = to_np(losses.quality_focal_loss(pred, labels, scores))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    # the exact numbers, for the record
    np.testing.assert_allclose(got, [0.03260249, 0.03315435, 0.17341503], rtol=RTOL)


def test_qfl_label_equal_num_classes_is_background():
    rng = np.random.default_rng(0)
    c = 5
    pred = rng.uniform(0.01, 0.99, size=(4, c)).astype(np.float32)
    scores = np.full((4,), 0.7, np.float32)
    got_c = to_np(losses.quality_focal_loss(pred, np.full((4,), c, np.int32), scores))
    got_m1 = to_np(losses.quality_focal_loss(pred, np.full((4,), -1, np.int32), scores))
    got_big = to_np(losses.quality_focal_loss(pred, np.full((4,), c + 3, np.int32), scores))
    # background: every class is a negative, -log(1 - p) p^2
    p = pred.astype(np.float64)
    expected = np.sum(-np.log(1.0 - p) * p**2, axis=1)
    np.testing.assert_allclose(got_c, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_m1, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_big, expected, rtol=RTOL, atol=ATOL)


def test_qfl_random_against_numpy_reference():
    rng = np.random.default_rng(1)
    n, c = 64, 7
    pred = rng.uniform(0.001, 0.999, size=(n, c)).astype(np.float32)
    labels = rng.integers(-1, c + 1, size=(n,)).astype(np.int32)  # includes -1 and C
    scores = rng.uniform(0.0, 1.0, size=(n,)).astype(np.float32)
    expected = ref.quality_focal_loss(pred, labels, scores)
    got = to_np(losses.quality_focal_loss(pred, labels, scores))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_qfl_beta_argument():
    rng = np.random.default_rng(2)
    pred = rng.uniform(0.05, 0.95, size=(8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, -1, 3, 0, 1, 2], np.int32)
    scores = rng.uniform(0.1, 0.9, size=(8,)).astype(np.float32)
    for beta in (1.0, 3.0):
        expected = ref.quality_focal_loss(pred, labels, scores, beta=beta)
        got = to_np(losses.quality_focal_loss(pred, labels, scores, beta=beta))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_qfl_probability_clamps_log_at_minus_100():
    # torch's binary_cross_entropy clamps log(.) at -100:
    #   background with J = 1: BCE(1, 0) = 100, times 1^2        -> 100 per class
    #   positive with J = 0 and y = 0.5: BCE(0, .5) = 50, |.5|^2  -> 12.5
    #   background with J = 0: 0 * 0^2 = 0
    pred = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], np.float32)
    labels = np.array([-1, 0, 1], np.int32)
    scores = np.array([0.3, 0.5, 1.0], np.float32)
    got = to_np(losses.quality_focal_loss(pred, labels, scores))
    # row 2: class 0 background J=0 -> 0; class 1 positive J=1, y=1 -> BCE(1,1)=0 * 0 = 0
    np.testing.assert_allclose(got, [100.0, 12.5, 0.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ref.quality_focal_loss(pred, labels, scores), [100.0, 12.5, 0.0])


def test_qfl_finite_when_no_positives_and_extreme_probabilities():
    # an image with no boxes: every row is background; J at 0 and 1 must stay finite
    pred = np.array([[0.0, 1.0, 0.5], [1e-8, 1.0 - 1e-7, 0.25]], np.float32)
    labels = np.array([-1, 3], np.int32)
    scores = np.zeros((2,), np.float32)
    got = to_np(losses.quality_focal_loss(pred, labels, scores))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref.quality_focal_loss(pred, labels, scores), rtol=RTOL, atol=ATOL)


def test_qfl_from_logits_hand_value():
    # logit 0 -> p = 0.5; positive with y = 1: log(2) * 0.25 ; negative logit 0: log(2) * 0.25
    pred = np.array([[0.0, 0.0]], np.float32)
    labels = np.array([0], np.int32)
    scores = np.array([1.0], np.float32)
    got = to_np(losses.quality_focal_loss(pred, labels, scores, from_logits=True))
    np.testing.assert_allclose(got, [2 * math.log(2.0) * 0.25], rtol=RTOL)


def test_qfl_from_logits_agrees_with_probabilities_on_sigmoid():
    rng = np.random.default_rng(3)
    n, c = 48, 6
    logits = rng.uniform(-4.0, 4.0, size=(n, c)).astype(np.float32)
    labels = rng.integers(-1, c + 1, size=(n,)).astype(np.int32)
    scores = rng.uniform(0.0, 1.0, size=(n,)).astype(np.float32)
    probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    got_logits = to_np(losses.quality_focal_loss(logits, labels, scores, from_logits=True))
    got_probs = to_np(losses.quality_focal_loss(probs, labels, scores, from_logits=False))
    np.testing.assert_allclose(got_logits, got_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got_logits, ref.quality_focal_loss(logits, labels, scores, from_logits=True), rtol=RTOL, atol=ATOL
    )


def test_qfl_from_logits_large_logits_are_finite():
    logits = np.array([[40.0, -40.0], [-40.0, 40.0]], np.float32)
    labels = np.array([1, -1], np.int32)
    scores = np.array([0.9, 0.0], np.float32)
    got = to_np(losses.quality_focal_loss(logits, labels, scores, from_logits=True))
    assert np.all(np.isfinite(got))
    # row 0: class 0 negative with logit 40 -> BCE = 40 (to float precision) * 1^2;
    #        class 1 positive logit -40, y=0.9 -> BCE = 0.9*40 + ~0 times 0.9^2 = 29.16
    # row 1: class 1 negative logit 40 -> 40
    np.testing.assert_allclose(got, [40.0 + 36.0 * 0.81, 40.0], rtol=RTOL)


# ---------------------------------------------------------------------------
# Distribution Focal Loss
# ---------------------------------------------------------------------------


def _ce(logits, k):
    m = max(logits)
    lse = m + math.log(sum(math.exp(v - m) for v in logits))
    return lse - logits[k]


def test_dfl_hand_values_fractional_integer_and_top_bin():
    n = 16
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 2.0, size=(4, n + 1)).astype(np.float32)
    target = np.array([3.25, 7.0, n - 0.1, 0.0], np.float32)
    L = logits.astype(np.float64).tolist()
    t0 = float(target[0])
    t2 = float(target[2])  # float32(15.9): weights use the float32 value
    expected = np.array(
        [
            _ce(L[0], 3) * (4 - t0) + _ce(L[0], 4) * (t0 - 3),  # 0.75 / 0.25
            _ce(L[1], 7),  # integer bin: all weight on the floor
            _ce(L[2], 15) * (16 - t2) + _ce(L[2], 16) * (t2 - 15),  # top: bins n-1 and n
            _ce(L[3], 0),  # zero distance
        ]
    )
    np.testing.assert_allclose(ref.distribution_focal_loss(logits, target), expected, rtol=1e-9)
    got = to_np(losses.distribution_focal_loss(logits, target))
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_dfl_uniform_logits_equals_log_bins():
    # uniform distribution: CE = log(n+1) for every bin, so the loss is log(17) whatever the target
    logits = np.zeros((3, 17), np.float32)
    target = np.array([0.0, 5.5, 15.9], np.float32)
    got = to_np(losses.distribution_focal_loss(logits, target))
    np.testing.assert_allclose(got, np.full(3, math.log(17.0)), rtol=RTOL)


def test_dfl_integer_target_ignores_next_bin():
    # Even an absurd logit on bin floor(t)+1 must not matter when t is an integer.
    logits = np.zeros((2, 17), np.float32)
    logits[0, 5] = 3.0
    logits[1, 5] = 3.0
    logits[1, 6] = -30.0
    target = np.array([5.0, 5.0], np.float32)
    got = to_np(losses.distribution_focal_loss(logits, target))
    ce0 = _ce(logits[0].astype(np.float64).tolist(), 5)
    ce1 = _ce(logits[1].astype(np.float64).tolist(), 5)
    np.testing.assert_allclose(got, [ce0, ce1], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n", [16, 7])
def test_dfl_target_on_the_last_bin_is_its_cross_entropy(n):
    # t = n: the floor is the last bin n and the bin above, n + 1, does not exist; its weight is 0,
    # so the loss is CE(n) alone (and the gather of that bin must stay in range).
    rng = np.random.default_rng(n)
    logits = rng.normal(0.0, 2.0, size=(3, n + 1)).astype(np.float32)
    target = np.array([n, n, n - 1], np.float32)
    got = to_np(losses.distribution_focal_loss(logits, target))
    rows = logits.astype(np.float64).tolist()
    np.testing.assert_allclose(got, [_ce(rows[0], n), _ce(rows[1], n), _ce(rows[2], n - 1)], rtol=RTOL, atol=ATOL)


def test_dfl_random_against_numpy_reference():
    rng = np.random.default_rng(5)
    for n in (16, 7):
        logits = rng.normal(0.0, 3.0, size=(50, n + 1)).astype(np.float32)
        target = rng.uniform(0.0, n - 0.1, size=(50,)).astype(np.float32)
        target[:5] = np.array([0.0, 1.0, n - 1.0, n - 0.1, 2.5], np.float32)
        expected = ref.distribution_focal_loss(logits, target)
        got = to_np(losses.distribution_focal_loss(logits, target))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_dfl_minimum_at_matching_distribution():
    # with logits = log of the two-bin target distribution, the loss equals its entropy
    t = 2.3
    probs = np.full(17, 1e-12)
    probs[2], probs[3] = 0.7, 0.3
    logits = np.log(probs / probs.sum()).astype(np.float32)[None]
    got = to_np(losses.distribution_focal_loss(logits, np.array([t], np.float32)))
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    np.testing.assert_allclose(got, [entropy], rtol=RTOL)


# ---------------------------------------------------------------------------
# GIoU loss
# ---------------------------------------------------------------------------


def test_giou_loss_hand_values():
    pred = np.array(
        [
            [0.0, 0.0, 2.0, 2.0],  # identical -> 0
            [0.0, 0.0, 1.0, 1.0],  # disjoint, gap: IoU 0, union 2, enclose 3 -> 1 + 1/3
            [0.0, 0.0, 2.0, 2.0],  # overlap 1, union 7, enclose 9 -> 1 - (1/7 - 2/9)
            [0.0, 0.0, 4.0, 4.0],  # contains: IoU 4/16, enclose = union -> 0.75
            [0.0, 0.0, 1.0, 1.0],  # touching corner: IoU 0, enclose 4, union 2 -> 1.5
        ],
        np.float32,
    )
    target = np.array(
        [
            [0.0, 0.0, 2.0, 2.0],
            [2.0, 0.0, 3.0, 1.0],
            [1.0, 1.0, 3.0, 3.0],
            [1.0, 1.0, 3.0, 3.0],
            [1.0, 1.0, 2.0, 2.0],
        ],
        np.float32,
    )
    expected = np.array([0.0, 4.0 / 3.0, 1.0 - (1.0 / 7.0 - 2.0 / 9.0), 0.75, 1.5])
    np.testing.assert_allclose(ref.giou_loss(pred, target), expected, rtol=1e-6, atol=1e-6)
    got = to_np(losses.giou_loss(pred, target))
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_giou_loss_random_against_numpy_reference():
    rng = np.random.default_rng(6)
    n = 100
    xy = rng.uniform(0, 50, size=(2, n, 2))
    wh = rng.uniform(1, 40, size=(2, n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    expected = ref.giou_loss(boxes[0], boxes[1])
    got = to_np(losses.giou_loss(boxes[0], boxes[1]))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert np.all((got >= 0.0) & (got <= 2.0))


def test_giou_loss_stride_units_small_boxes():
    # boxes in stride units are small (a few units); still exact to 1e-6
    pred = np.array([[0.1, 0.2, 0.9, 1.4], [2.0, 2.0, 2.5, 2.25]], np.float32)
    target = np.array([[0.0, 0.0, 1.0, 1.0], [2.1, 1.9, 2.6, 2.3]], np.float32)
    np.testing.assert_allclose(to_np(losses.giou_loss(pred, target)), ref.giou_loss(pred, target), rtol=RTOL, atol=ATOL)


def test_losses_accept_tensors():
    pred = keras.ops.convert_to_tensor(np.array([[0.2, 0.6]], np.float32))
    labels = keras.ops.convert_to_tensor(np.array([1], np.int32))
    scores = keras.ops.convert_to_tensor(np.array([0.8], np.float32))
    got = to_np(losses.quality_focal_loss(pred, labels, scores))
    np.testing.assert_allclose(got, [0.03260249], rtol=RTOL)


def test_losses_for_an_image_with_no_boxes():
    # No positives: QFL sees only background rows, DFL and GIoU get zero rows.
    rng = np.random.default_rng(7)
    pred = rng.uniform(0.0, 1.0, size=(10, 4)).astype(np.float32)
    qfl = to_np(losses.quality_focal_loss(pred, np.full((10,), -1, np.int32), np.zeros((10,), np.float32)))
    assert qfl.shape == (10,) and np.all(np.isfinite(qfl))
    np.testing.assert_allclose(qfl, np.sum(-np.log1p(-pred.astype(np.float64)) * pred**2, axis=1), rtol=RTOL, atol=ATOL)
    dfl = to_np(losses.distribution_focal_loss(np.zeros((0, 17), np.float32), np.zeros((0,), np.float32)))
    assert dfl.shape == (0,)
    assert float(np.sum(dfl)) == 0.0
    gl = to_np(losses.giou_loss(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)))
    assert gl.shape == (0,)
    assert float(np.sum(gl)) == 0.0
