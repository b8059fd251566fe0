"""Reference tests for keras_gfocal.assigners.atss_assign (ATSS, topk = 9)."""

import keras
import numpy as np
import numpy_reference as ref
import pytest

from keras_gfocal.assigners import atss_assign

STRIDES = (8, 16, 32, 64, 128)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def run(anchors, num_level, gt, valid, **kw):
    out = atss_assign(
        np.asarray(anchors, np.float32), list(num_level), np.asarray(gt, np.float32), np.asarray(valid, bool), **kw
    )
    out_np = to_np(out)
    assert out_np.dtype == np.int32
    return out_np


def image_anchors(h=128, w=128):
    points, strides, counts = ref.make_points(h, w, STRIDES)
    return ref.points_to_anchors(points, strides).astype(np.float32), counts, points


# A tiny single-level layout: anchor 0 at the origin, three far-away anchors with IoU 0.
TINY_ANCHORS = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210], [300, 300, 310, 310]], np.float32)


# ---------------------------------------------------------------------------
# hand-checkable cases
# ---------------------------------------------------------------------------


def test_hand_case_three_anchors_threshold():
    # one level, 3 anchors (all candidates). gt = anchor 0.
    # IoUs: (1, 50/150 = 1/3, 0); mean 4/9; std (ddof=1) sqrt(21)/9 = 0.509; thr 0.954
    # -> only anchor 0 (IoU 1, centre (5,5) inside with distances 5) is positive.
    anchors = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 0, 30, 10]], np.float32)
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    got = run(anchors, [3], gt, [[True]])
    np.testing.assert_array_equal(got, [[0, -1, -1]])
    np.testing.assert_array_equal(ref.atss_assign(anchors, [3], gt, [[True]]), [[0, -1, -1]])


def test_threshold_uses_bessel_corrected_std():
    # one level, 8 anchors (all candidates): A0 = gt, A1/A2 shifted by -1.5/+1.5 px
    # (IoU 85/115 = 0.7391 each), five far anchors (IoU 0).
    # IoUs (1, .7391, .7391, 0 x5): mean 0.3098;
    #   std ddof=1 -> thr 0.7448 > 0.7391: only A0 positive (the reference)
    #   std ddof=0 -> thr 0.7167 < 0.7391: A1 and A2 would be positive too
    anchors = np.array(
        [[0, 0, 10, 10], [-1.5, 0, 8.5, 10], [1.5, 0, 11.5, 10]]
        + [[100 * i, 100 * i, 100 * i + 10, 100 * i + 10] for i in range(1, 6)],
        np.float32,
    )
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    expected = [[0, -1, -1, -1, -1, -1, -1, -1]]
    np.testing.assert_array_equal(ref.atss_assign(anchors, [8], gt, [[True]]), expected)
    np.testing.assert_array_equal(run(anchors, [8], gt, [[True]]), expected)


def test_two_boxes_competing_for_one_anchor_highest_iou_wins():
    # gt A = [0,0,10,10] (IoU 1 with anchor 0), gt B = [1,1,10,10] (IoU 0.81 with anchor 0).
    # For each, IoUs over the 4 candidates are (x, 0, 0, 0): thr = 0.75 x, so anchor 0 is
    # positive for both (its centre (5,5) is inside both) and must go to the higher IoU.
    a = [0, 0, 10, 10]
    b = [1, 1, 10, 10]
    got = run(TINY_ANCHORS, [4], [[a, b], [b, a]], [[True, True], [True, True]])
    np.testing.assert_array_equal(got, [[0, -1, -1, -1], [1, -1, -1, -1]])
    # identical boxes: tie -> lower gt index
    got = run(TINY_ANCHORS, [4], [[b, b]], [[True, True]])
    np.testing.assert_array_equal(got, [[0, -1, -1, -1]])
    # the winner is padding -> the other box gets the anchor
    got = run(TINY_ANCHORS, [4], [[a, b]], [[False, True]])
    np.testing.assert_array_equal(got, [[1, -1, -1, -1]])


def test_centre_must_be_strictly_inside_with_margin_0_01():
    # anchor 0 has centre (5, 5). Its IoU with the gts below passes the threshold
    # (others are 0), so only the centre condition decides.
    gts = [
        [5.0, 0.0, 15.0, 10.0],  # left distance 0      -> not positive
        [4.995, 0.0, 15.0, 10.0],  # left distance 0.005 -> not positive
        [4.98, 0.0, 15.0, 10.0],  # left distance 0.02  -> positive
        [0.0, 0.0, 10.0, 5.0],  # bottom distance 0    -> not positive
    ]
    got = run(TINY_ANCHORS, [4], [[g] for g in gts], [[True]] * 4)
    np.testing.assert_array_equal(got[:, 0], [-1, -1, 0, -1])
    np.testing.assert_array_equal(got[:, 1:], -1)
    exp = ref.atss_assign(TINY_ANCHORS, [4], np.array([[g] for g in gts], np.float32), [[True]] * 4)
    np.testing.assert_array_equal(got, exp)


def test_box_smaller_than_a_stride():
    # gt [45,46,51,50] (6 x 4 px) on a 128x128 image. The 9 nearest P3 anchors (side 64)
    # all contain the box, so they share the top IoU 24/4096; lower levels have 4x, 16x ...
    # smaller IoUs, so the threshold (~0.78 * 24/4096) is passed by exactly those 9.
    # Of them only the point (48, 48) lies inside the box -> exactly one positive:
    # P3 index 6 * 16 + 6 = 102.
    anchors, counts, _ = image_anchors()
    gt = np.array([[[45, 46, 51, 50]]], np.float32)
    got = run(anchors, counts, gt, [[True]])
    expected = np.full((1, anchors.shape[0]), -1)
    expected[0, 102] = 0
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(ref.atss_assign(anchors, counts, gt, [[True]]), expected)


def test_box_too_small_to_contain_any_point_gets_nothing():
    anchors, counts, _ = image_anchors()
    gt = np.array([[[49, 49, 55, 55]]], np.float32)  # between P3 points 48 and 56
    got = run(anchors, counts, gt, [[True]])
    np.testing.assert_array_equal(got, -1)


def test_box_touching_image_border():
    # points on x = 0 or y = 0 sit on the box edge (distance 0) and can never be positive
    anchors, counts, points = image_anchors()
    gt = np.array([[[0, 0, 30, 20], [90.5, 100.0, 128, 128]]], np.float32)
    valid = np.array([[True, True]])
    got = run(anchors, counts, gt, valid)
    exp = ref.atss_assign(anchors, counts, gt, valid)
    np.testing.assert_array_equal(got, exp)
    pos = np.nonzero(got[0] == 0)[0]
    assert len(pos) > 0
    assert np.all(points[pos, 0] > 0) and np.all(points[pos, 1] > 0)
    # Hand check of box 0 (centre (15, 10)): its 9 nearest P3 points are (16,8), (16,16),
    # (8,8), (24,8), (8,16), (16,0), (24,16), (8,0), (24,0); the six not on y = 0 lie
    # inside and pass the threshold (P3 anchors overlap the box most), y = 0 ones cannot.
    assert pos.tolist() == [17, 18, 19, 33, 34, 35]
    # box 1 reaches the right/bottom border: P3 points x in {104..120}, y in {104..120}
    assert np.nonzero(got[0] == 1)[0].tolist() == [221, 222, 236, 237, 238, 239, 253, 254, 255]


# ---------------------------------------------------------------------------
# empty images / padding
# ---------------------------------------------------------------------------


def test_image_with_no_boxes_all_negative():
    anchors, counts, _ = image_anchors()
    gt = np.zeros((2, 3, 4), np.float32)
    got = run(anchors, counts, gt, np.zeros((2, 3), bool))
    assert got.shape == (2, anchors.shape[0])
    np.testing.assert_array_equal(got, -1)


def test_padding_boxes_never_assigned_and_do_not_compete():
    anchors, counts, _ = image_anchors()
    real = [20.3, 30.7, 70.1, 90.2]
    # image 0: real box then zero padding; image 1: padding is a *valid-looking* box that
    # would win the competition if it were considered; image 2: no boxes at all.
    gt = np.array(
        [
            [real, [0, 0, 0, 0], [0, 0, 0, 0]],
            [[20.0, 30.0, 70.0, 90.0], real, [0, 0, 0, 0]],
            [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        ],
        np.float32,
    )
    valid = np.array([[True, False, False], [False, True, False], [False, False, False]])
    got = run(anchors, counts, gt, valid)
    exp = ref.atss_assign(anchors, counts, gt, valid)
    np.testing.assert_array_equal(got, exp)
    assert np.sum(got[0] == 0) > 0
    np.testing.assert_array_equal(got[0] == 0, got[1] == 1)  # same box, same anchors
    assert set(np.unique(got[0]).tolist()) == {-1, 0}
    assert set(np.unique(got[1]).tolist()) == {-1, 1}
    np.testing.assert_array_equal(got[2], -1)


# ---------------------------------------------------------------------------
# random cases against the NumPy ATSS
# ---------------------------------------------------------------------------


def _draw_case(rng, anchors, counts, batch, num_gt, h=128, w=128):
    """Random boxes, redrawn until no decision lies within float32 rounding of a boundary."""
    while True:
        gt = np.zeros((batch, num_gt, 4), np.float32)
        valid = np.zeros((batch, num_gt), bool)
        ok = True
        for b in range(batch):
            n_valid = int(rng.integers(1, num_gt + 1))
            wh = rng.uniform(4.0, 110.0, size=(num_gt, 2))
            x1 = rng.uniform(-10.0, w - 4.0, size=(num_gt,))
            y1 = rng.uniform(-10.0, h - 4.0, size=(num_gt,))
            boxes = np.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], axis=-1)
            boxes = np.clip(boxes, 0.0, [w, h, w, h])
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2.0)
            boxes = boxes.astype(np.float32)
            # padding rows: garbage boxes for odd b, zeros for even b
            if b % 2 == 0:
                boxes[n_valid:] = 0.0
            gt[b] = boxes
            valid[b, :n_valid] = True
            _, m = ref.atss_assign_single(anchors, counts, gt[b], valid[b], return_margins=True)
            if min(m["topk_gap"], m["thr_gap"], m["inside_gap"], m["compete_gap"]) < 1e-4:
                ok = False
        if ok:
            return gt, valid


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_random_against_numpy_atss(seed):
    rng = np.random.default_rng(100 + seed)
    anchors, counts, _ = image_anchors()
    num_gt = 3 + seed % 3  # 3..5
    gt, valid = _draw_case(rng, anchors, counts, batch=2, num_gt=num_gt)
    got = run(anchors, counts, gt, valid)
    exp = ref.atss_assign(anchors, counts, gt, valid)
    assert got.shape == (2, anchors.shape[0])
    np.testing.assert_array_equal(got, exp)
    # every assigned index is a valid gt of that image
    for b in range(2):
        idx = got[b][got[b] >= 0]
        assert np.all(valid[b][idx])


def test_random_non_square_image_against_numpy_atss():
    rng = np.random.default_rng(200)
    anchors, counts, _ = image_anchors(h=96, w=160)
    gt, valid = _draw_case(rng, anchors, counts, batch=2, num_gt=4, h=96, w=160)
    got = run(anchors, counts, gt, valid)
    np.testing.assert_array_equal(got, ref.atss_assign(anchors, counts, gt, valid))


def test_many_overlapping_boxes_competition_against_numpy():
    # several heavily overlapping boxes of different sizes around the same centre: many
    # anchors are positive for more than one box, so the highest-IoU rule decides.
    anchors, counts, _ = image_anchors()
    gt = np.array(
        [
            [
                [30.3, 28.9, 90.7, 95.1],
                [35.2, 40.6, 80.3, 79.8],
                [20.1, 20.4, 110.9, 107.7],
                [44.6, 45.2, 67.3, 66.1],
                [38.4, 36.7, 97.3, 84.2],
            ]
        ],
        np.float32,
    )
    valid = np.ones((1, 5), bool)
    exp, m = ref.atss_assign_single(anchors, counts, gt[0], valid[0], return_margins=True)
    assert m["compete_gap"] > 1e-4 and m["thr_gap"] > 1e-4 and m["topk_gap"] > 1e-4
    got = run(anchors, counts, gt, valid)
    np.testing.assert_array_equal(got[0], exp)
    assert len(set(exp.tolist()) - {-1}) >= 3


def test_topk_argument():
    rng = np.random.default_rng(300)
    anchors, counts, _ = image_anchors()
    gt, valid = _draw_case(rng, anchors, counts, batch=1, num_gt=3)
    for k in (3, 15):
        got = run(anchors, counts, gt, valid, topk=k)
        np.testing.assert_array_equal(got, ref.atss_assign(anchors, counts, gt, valid, topk=k))


def test_distance_ties_broken_by_lower_index():
    # gt centre (20, 20) on the P3 grid: (16,16),(24,16),(16,24),(24,24) tie at distance
    # sqrt(32), then 8 anchors tie at sqrt(160) for the remaining 5 places; the lower
    # (row-major) indices must win. Exactly representable numbers: no rounding involved.
    anchors, counts, _ = image_anchors()
    gt = np.array([[[4.0, 6.0, 36.0, 34.0]]], np.float32)
    got = run(anchors, counts, gt, [[True]])
    np.testing.assert_array_equal(got, ref.atss_assign(anchors, counts, gt, [[True]]))


def test_batch_without_any_gt_slot():
    # A batch whose images all have no boxes, padded to G = 0 (e.g. padding to the largest
    # box count in the batch): every anchor is background, no error.
    anchors, counts, _ = image_anchors()
    got = run(anchors, counts, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), bool))
    assert got.shape == (2, anchors.shape[0])
    np.testing.assert_array_equal(got, -1)


# ---------------------------------------------------------------------------
# points over an image's padding (anchor_valid)
# ---------------------------------------------------------------------------


def test_valid_point_mask_hand_values():
    from keras_gfocal.boxes import make_points
    from keras_gfocal.detection_loss import valid_point_mask

    points, strides, counts = make_points(128, 128, STRIDES)
    # (40, 60) pads to (64, 64): 8 x 8 P3 cells, 4 x 4 P4, 2 x 2 P5, one P6, one P7 = 86.
    # (30, 40) pads to (32, 64): 4 rows x 8 cols on P3, 2 x 4 on P4, 1 x 2 on P5, 1, 1 = 44.
    # (128, 128) is the whole canvas.
    mask = to_np(valid_point_mask(points, strides, np.array([[40, 60], [30, 40], [128, 128]], np.int32)))
    assert mask.shape == (3, sum(counts))
    assert mask.sum(axis=1).tolist() == [86, 44, sum(counts)]
    pts = np.asarray(points)
    p3 = slice(0, counts[0])
    inside0 = (pts[p3, 0] < 64) & (pts[p3, 1] < 64)
    np.testing.assert_array_equal(mask[0, p3], inside0)
    np.testing.assert_array_equal(mask[1, p3], (pts[p3, 0] < 64) & (pts[p3, 1] < 32))
    assert mask[0, -1] and mask[1, -1]  # P7's single cell (0, 0)
    for b, size in enumerate([(40, 60), (30, 40), (128, 128)]):
        np.testing.assert_array_equal(mask[b], ref.valid_points(128, 128, size, STRIDES))


def test_points_over_padding_are_no_candidates_and_never_positive():
    # A 128 x 128 canvas holding three images of resized sizes (40, 60), (30, 40), (128, 128).
    anchors, counts, points = image_anchors()
    sizes = [(40, 60), (30, 40), (128, 128)]
    valid = np.stack([ref.valid_points(128, 128, s, STRIDES) for s in sizes])
    gt = np.array([[[0, 0, 60, 40]], [[20, 2, 100, 28]], [[0, 0, 60, 40]]], np.float32)
    gt_valid = np.ones((3, 1), bool)
    for b in range(3):  # no decision within float rounding of its boundary
        _, m = ref.atss_assign_single(anchors, counts, gt[b], gt_valid[b], return_margins=True, anchor_valid=valid[b])
        assert min(m["thr_gap"], m["inside_gap"]) > 1e-3
    got = run(anchors, counts, gt, gt_valid, anchor_valid=valid)
    unmasked = run(anchors, counts, gt, gt_valid)
    np.testing.assert_array_equal(got, ref.atss_assign(anchors, counts, gt, gt_valid, anchor_valid=valid))
    assert not np.any(got[~valid] >= 0)
    # Image 0: its box lies inside the image, so no padding point can be inside it, but the
    # padding points of P4-P7 would be candidates and lower the IoU threshold: without the
    # mask two more points ((40, 16) and (40, 24)) pass it.
    assert np.nonzero(got[0] == 0)[0].tolist() == [19, 20, 35, 36, 51, 52, 68]
    assert np.nonzero(unmasked[0] == 0)[0].tolist() == [19, 20, 35, 36, 37, 51, 52, 53, 68]
    # Image 1: a box reaching over the padding (x up to 100, the image is 40 wide, padded
    # to 64): points at x = 64 and 72 would be positive; with the mask only x < 64 are.
    pos = np.nonzero(got[1] == 0)[0]
    assert points[pos].tolist() == [[48, 8], [56, 8], [48, 16], [56, 16], [48, 24], [56, 24]]
    assert np.any(~valid[1][unmasked[1] == 0])
    # Image 2 fills the canvas: the mask changes nothing.
    np.testing.assert_array_equal(got[2], unmasked[2])


@pytest.mark.parametrize("seed", [0, 1])
def test_random_padding_masks_against_numpy_atss(seed):
    rng = np.random.default_rng(400 + seed)
    anchors, counts, _ = image_anchors(h=96, w=160)
    sizes = [(int(rng.integers(20, 97)), int(rng.integers(20, 161))) for _ in range(2)]
    valid = np.stack([ref.valid_points(96, 160, s, STRIDES) for s in sizes])
    while True:
        gt, gt_valid = _draw_case(rng, anchors, counts, batch=2, num_gt=4, h=96, w=160)
        margins = [
            ref.atss_assign_single(anchors, counts, gt[b], gt_valid[b], return_margins=True, anchor_valid=valid[b])[1]
            for b in range(2)
        ]
        if all(min(m.values()) >= 1e-4 for m in margins):
            break
    got = run(anchors, counts, gt, gt_valid, anchor_valid=valid)
    np.testing.assert_array_equal(got, ref.atss_assign(anchors, counts, gt, gt_valid, anchor_valid=valid))
    assert not np.any(got[~valid] >= 0)


# ---------------------------------------------------------------------------
# few candidates: the threshold's Bessel-corrected std, on both paths
# ---------------------------------------------------------------------------


def _ref_quiet(*args, **kw):
    """The NumPy reference; a single candidate's std with ddof 1 is NaN (as torch's), warned about."""
    import warnings

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return ref.atss_assign(*args, **kw)


@pytest.mark.parametrize("with_valid", [False, True], ids=["no_mask", "all_valid_mask"])
def test_one_or_two_candidates_are_never_positive(with_valid):
    # Two candidates with IoUs a > b: mean + std (ddof 1) = (a + b) / 2 + (a - b) / sqrt(2) > a, so
    # neither is positive; one candidate: its std (ddof 1) is undefined (NaN, as torch's), so it is
    # not positive either -- even a candidate identical to the box. (With ddof 0 the best of two,
    # and a lone candidate, would reach the threshold exactly.)
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    for topk in (1, 2):
        kw = dict(topk=topk, anchor_valid=np.ones((1, 4), bool) if with_valid else None)
        expected = _ref_quiet(TINY_ANCHORS, [4], gt, [[True]], **kw)
        np.testing.assert_array_equal(expected, [[-1, -1, -1, -1]])
        np.testing.assert_array_equal(run(TINY_ANCHORS, [4], gt, [[True]], **kw), expected)
    # three candidates: the box itself passes
    np.testing.assert_array_equal(run(TINY_ANCHORS, [4], gt, [[True]], topk=3), [[0, -1, -1, -1]])


def test_a_single_valid_candidate_is_never_positive():
    # topk 2 on one level, but only anchor 0 is valid: one candidate left (the reference runs
    # ATSS on the valid anchors only), whose std is undefined: nothing is positive.
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    mask = np.array([[True, False, False, False]])
    expected = _ref_quiet(TINY_ANCHORS, [4], gt, [[True]], topk=2, anchor_valid=mask)
    np.testing.assert_array_equal(expected, [[-1, -1, -1, -1]])
    np.testing.assert_array_equal(run(TINY_ANCHORS, [4], gt, [[True]], topk=2, anchor_valid=mask), expected)


@pytest.mark.parametrize("with_valid", [False, True], ids=["no_mask", "mask"])
def test_concentric_candidates_threshold_by_hand(with_valid):
    # Three anchors centred on the box's centre (5, 5): IoUs 1, 100/400 = 0.25, 100/1600 = 0.0625.
    # mean 0.4375, squared deviations sum 0.4922; std (ddof 1) = sqrt(0.4922 / 2) = 0.4961;
    # threshold 0.9336: only the first is positive (a denominator of n - 2 = 1 would give 1.139).
    # With the mask, a fourth (invalid) anchor centred there too takes no part.
    anchors = np.array([[0, 0, 10, 10], [-5, -5, 15, 15], [-15, -15, 25, 25], [2, 2, 8, 8]], np.float32)
    gt = np.array([[[0, 0, 10, 10]]], np.float32)
    if with_valid:
        kw = dict(topk=4, anchor_valid=np.array([[True, True, True, False]]))
    else:
        anchors, kw = anchors[:3], dict(topk=3)
    expected = [[0, -1, -1, -1][: len(anchors)]]
    np.testing.assert_array_equal(ref.atss_assign(anchors, [len(anchors)], gt, [[True]], **kw), expected)
    np.testing.assert_array_equal(run(anchors, [len(anchors)], gt, [[True]], **kw), expected)


def test_candidates_exactly_at_the_threshold_are_positive():
    # Four 10 x 10 anchors in the four quarters of a 20 x 20 box: the same IoU (0.25) each, so the
    # mean is that IoU exactly and the std 0: every candidate sits exactly at the threshold, and
    # "IoU >= threshold" makes all four positive.
    anchors = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], np.float32)
    gt = np.array([[[0, 0, 20, 20]]], np.float32)
    for kw in ({}, {"anchor_valid": np.ones((1, 4), bool)}):
        np.testing.assert_array_equal(ref.atss_assign(anchors, [4], gt, [[True]], topk=4, **kw), [[0, 0, 0, 0]])
        np.testing.assert_array_equal(run(anchors, [4], gt, [[True]], topk=4, **kw), [[0, 0, 0, 0]])


def test_centre_exactly_at_the_margin_is_not_inside():
    # The box's left edge lies exactly float32(0.01) left of anchor 0's centre (0, 0): the centre
    # must be MORE than 0.01 inside, so anchor 0 is not positive; 0.02 inside, it is
    # (IoUs (0.334, 0, 0): mean 0.111, std 0.193, threshold 0.304).
    anchors = np.array([[-5, -5, 5, 5], [100, 100, 110, 110], [200, 200, 210, 210]], np.float32)
    for x1, expected in ((-np.float32(0.01), [[-1, -1, -1]]), (-np.float32(0.02), [[0, -1, -1]])):
        gt = np.array([[[x1, -5, 10, 5]]], np.float32)
        np.testing.assert_array_equal(ref.atss_assign(anchors, [3], gt, [[True]]), expected)
        np.testing.assert_array_equal(run(anchors, [3], gt, [[True]]), expected)
