"""keras_gfocal.export.numpy_postprocess on hand-made raw outputs: hand-computed expected values.

Canvas 64 x 32 with strides (16, 32): level 0 is 4 x 2 = 8 points, level 1 is 2 x 1 = 2.
The reg logits are one-hot-like (a large logit on one bin), so each distance is that bin
times the stride, to float rounding.
"""

import numpy as np
import pytest

from keras_gfocal.export import numpy_postprocess as npp

CANVAS = [64, 32]
STRIDES = [16, 32]
REG_MAX = 4
BIG = 40.0


def _metadata(top_k=1000, threshold=0.05, iou=0.6, max_det=100, num_classes=2):
    return {
        "num_classes": num_classes,
        "canvas_size": CANVAS,
        "postprocessing": {
            "strides": STRIDES,
            "reg_max": REG_MAX,
            "pre_nms_top_k": top_k,
            "score_threshold": threshold,
            "iou_threshold": iou,
            "max_detections": max_det,
        },
    }


def _reg(bins):
    """``bins [A, 4]`` -> reg logits with all mass on those bins."""
    bins = np.asarray(bins)
    logits = np.zeros((len(bins), 4, REG_MAX + 1), np.float32)
    for a in range(len(bins)):
        logits[a, np.arange(4), bins[a]] = BIG
    return logits.reshape(len(bins), -1)


def test_prior_points_hand_values():
    points, strides, counts = npp.prior_points((40, 20), (16, 32))  # ceil: 3 x 2 and 2 x 1
    assert counts == [6, 2]
    np.testing.assert_array_equal(points, [[0, 0], [16, 0], [0, 16], [16, 16], [0, 32], [16, 32], [0, 0], [0, 32]])
    np.testing.assert_array_equal(strides, [16] * 6 + [32] * 2)
    assert points.dtype == np.float32 and strides.dtype == np.float32


def test_decode_expectation_times_stride_clipped_to_canvas():
    points = np.array([[16, 16], [0, 32]], np.float32)
    strides = np.array([16, 32], np.float32)
    # point 0: l=1, t=0, r=2, b=0 bins; point 1: mass split 50/50 between bins 0 and 2 on every edge
    logits = _reg([[1, 0, 2, 0], [0, 0, 0, 0]]).reshape(2, 4, REG_MAX + 1)
    logits[1, :, 2] = BIG
    boxes, top1 = npp.decode(logits.reshape(2, -1), points, strides, (64, 32), reg_max=REG_MAX)
    np.testing.assert_allclose(boxes[0], [0, 16, 32, 16], atol=1e-4)
    # point 1: distances 1 bin x 32 = 32 each side, clipped to [0, 32] x [0, 64]
    np.testing.assert_allclose(boxes[1], [0, 0, 32, 64], atol=1e-4)
    np.testing.assert_allclose(top1, [[1, 1, 1, 1], [0.5, 0.5, 0.5, 0.5]], atol=1e-6)
    # clip only: a point at (16, 16) with 2 bins x 16 = 32 px each way is cut at 0 and 32 / 48
    boxes, _ = npp.decode(_reg([[2, 2, 2, 2]]), points[:1], strides[:1], (64, 32), reg_max=REG_MAX)
    np.testing.assert_allclose(boxes[0], [0, 0, 32, 48], atol=1e-4)


def _scene():
    """10 points, 2 classes; boxes chosen so that NMS decisions are known by hand."""
    scores = np.zeros((10, 2), np.float32)
    bins = np.zeros((10, 4), np.int64)
    # level 0 (points 0-7, stride 16; point k at x = 16 (k % 2), y = 16 (k // 2))
    scores[3] = [0.9, 0.0]  # (16, 16): box [0, 0, 32, 32] (1 bin each way)
    bins[3] = [1, 1, 1, 1]
    scores[5] = [0.8, 0.3]  # (16, 32): box [0, 16, 32, 48]: IoU 1/3 with point 3's box
    bins[5] = [1, 1, 1, 1]
    scores[2] = [0.7, 0.0]  # (0, 16): box [0, 0, 16, 32]: IoU 0.5 with point 3's box (class 0)
    bins[2] = [0, 1, 1, 1]
    scores[4] = [0.0, 0.05]  # exactly the threshold: dropped (strictly above only)
    bins[4] = [1, 1, 0, 0]  # (0, 32): box [0, 16, 0, 32], alone, overlaps nothing
    scores[0] = [0.1, 0.0]  # (0, 0): box [0, 0, 16, 16]: IoU 1/4 with point 3's box
    bins[0] = [0, 0, 1, 1]
    # level 1 (points 8, 9 at (0, 0) and (0, 32), stride 32)
    scores[9] = [0.0, 0.6]  # box [0, 0, 32, 64]
    bins[9] = [0, 1, 1, 1]
    scores[8] = [0.2, 0.0]  # box [0, 0, 32, 32]: same box as point 3, class 0, IoU 1 -> suppressed
    bins[8] = [0, 0, 1, 1]
    return scores, _reg(bins)


def test_postprocess_threshold_classwise_nms_and_order():
    scores, reg = _scene()
    det = npp.postprocess(scores, reg, _metadata(iou=0.6))
    np.testing.assert_allclose(det["scores"], [0.9, 0.8, 0.7, 0.6, 0.3, 0.1], atol=1e-7)
    np.testing.assert_array_equal(det["labels"], [0, 0, 0, 1, 1, 0])
    np.testing.assert_allclose(
        det["boxes"],
        [[0, 0, 32, 32], [0, 16, 32, 48], [0, 0, 16, 32], [0, 0, 32, 64], [0, 16, 32, 48], [0, 0, 16, 16]],
        atol=1e-4,
    )
    assert det["labels"].dtype == np.int32 and det["scores"].dtype == np.float32
    np.testing.assert_allclose(det["edge_confidence"], np.ones((6, 4)), atol=1e-6)
    # a lower IoU threshold: point 2 (IoU 0.5) and point 5 (IoU 1/3 with point 3) go too;
    # class 1 is suppressed within its own class only (point 5's class-1 box vs point 9's: IoU 0.5)
    det = npp.postprocess(scores, reg, _metadata(iou=0.3))
    np.testing.assert_allclose(det["scores"], [0.9, 0.6, 0.1], atol=1e-7)
    np.testing.assert_array_equal(det["labels"], [0, 1, 0])
    det = npp.postprocess(scores, reg, _metadata(iou=0.2))  # point 0 (IoU 1/4 with point 3) goes too
    np.testing.assert_allclose(det["scores"], [0.9, 0.6], atol=1e-7)
    det = npp.postprocess(scores, reg, _metadata(iou=0.5))  # IoU exactly 0.5 is kept (strictly above)
    np.testing.assert_allclose(det["scores"], [0.9, 0.8, 0.7, 0.6, 0.3, 0.1], atol=1e-7)


def test_postprocess_max_detections_and_batch_axis():
    scores, reg = _scene()
    det = npp.postprocess(scores[None], reg[None], _metadata(max_det=2))
    np.testing.assert_allclose(det["scores"], [0.9, 0.8], atol=1e-7)
    assert det["boxes"].shape == (2, 4) and det["edge_confidence"].shape == (2, 4)
    det = npp.postprocess(scores, reg, _metadata(max_det=1))
    np.testing.assert_allclose(det["scores"], [0.9], atol=1e-7)


def test_postprocess_per_level_top_k_cut():
    scores, reg = _scene()
    # top 2 per level by the max-class score: level 0 keeps points 3 (0.9) and 5 (0.8),
    # level 1 keeps both of its points; point 2 (0.7) is cut although it beats level 1's.
    det = npp.postprocess(scores, reg, _metadata(top_k=2))
    np.testing.assert_allclose(det["scores"], [0.9, 0.8, 0.6, 0.3], atol=1e-7)
    # top 5 of level 0 (3, 5, 2, 0 and 4 by max-class score): point 0 (0.1) is in
    det = npp.postprocess(scores, reg, _metadata(top_k=5))
    np.testing.assert_allclose(det["scores"], [0.9, 0.8, 0.7, 0.6, 0.3, 0.1], atol=1e-7)
    # top 1: level 0 keeps point 3 only, level 1 point 9; point 8's suppression no longer matters
    det = npp.postprocess(scores, reg, _metadata(top_k=1))
    np.testing.assert_allclose(det["scores"], [0.9, 0.6], atol=1e-7)
    np.testing.assert_array_equal(det["labels"], [0, 1])


def test_postprocess_top_k_ties_keep_the_lower_index():
    scores = np.zeros((10, 1), np.float32)
    scores[[1, 6]] = 0.5  # same score at points 1 and 6 of level 0
    bins = np.zeros((10, 4), np.int64)
    bins[1] = [0, 0, 1, 1]  # (16, 0): [16, 0, 32, 16]
    bins[6] = [0, 0, 1, 1]  # (0, 48): [0, 48, 16, 64]
    det = npp.postprocess(scores, _reg(bins), _metadata(top_k=1, num_classes=1))
    np.testing.assert_allclose(det["boxes"], [[16, 0, 32, 16]], atol=1e-4)


def test_postprocess_nothing_above_threshold_and_wrong_point_count():
    scores, reg = _scene()
    det = npp.postprocess(scores, reg, _metadata(threshold=0.95))
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)
    assert det["edge_confidence"].shape == (0, 4)
    with pytest.raises(ValueError, match="9 points in the outputs, 10 expected"):
        npp.postprocess(scores[:9], reg[:9], _metadata())


def test_iou_hand_values():
    iou = npp._iou(np.array([0, 0, 10, 10.0]), np.array([[0, 0, 10, 5.0], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [0.5, 50 / 150, 0.0])
    # a box with x1 != y1 (area 4 x 8 = 32); overlaps under one pixel; one box apart on both axes
    others = np.array(
        [[0, 0, 4, 4], [3, 5, 9, 9], [6, 0, 8, 1], [4.5, 0, 7, 3], [0, 9.5, 3, 12], [6, 2, 8, 4], [2, 11, 4, 12]],
        np.float64,
    )  # the last two: apart on one axis only
    iou = npp._iou(np.array([1, 2, 5, 10.0]), others)
    np.testing.assert_allclose(iou, [6 / 42, 8 / 48, 0.0, 0.5 / 39, 1 / 38.5, 0.0, 0.0])
    # boxes under one pixel: the guard only stops a zero division
    np.testing.assert_allclose(
        npp._iou(np.array([0, 0, 0.5, 0.5]), np.array([[0, 0, 0.5, 0.5], [0.25, 0, 0.5, 0.5]])), [1.0, 0.5]
    )


def test_decode_default_reg_max_dtypes_and_extreme_logits():
    points = np.array([[16, 16], [48, 16]], np.float32)
    strides = np.array([16, 16], np.float32)
    logits = np.zeros((2, 4, 17), np.float32)
    logits[0, :, 1] = 1000.0  # all mass on bin 1 despite huge logits
    logits[1] = -1000.0  # another point at a very different logit scale: all bins equal
    logits[1, :, 0] = -999.0  # ... bin 0 e times as likely as each other bin
    boxes, top1 = npp.decode(logits.reshape(2, -1), points, strides, (64, 64))  # reg_max 16 by default
    assert boxes.dtype == np.float32 and top1.dtype == np.float32
    assert np.all(np.isfinite(boxes)) and np.all(np.isfinite(top1))
    np.testing.assert_allclose(boxes[0], [0, 0, 32, 32], atol=1e-3)
    z = np.e + 16.0
    d = 16 * (np.arange(17).sum() - 0) / z  # expectation: sum_k k p_k, p_0 = e / z, p_k = 1 / z
    np.testing.assert_allclose(boxes[1], np.clip([48 - d, 16 - d, 48 + d, 16 + d], 0, 64), rtol=1e-5)
    np.testing.assert_allclose(top1[1], np.full(4, np.e / z), rtol=1e-5)


def test_postprocess_three_levels_keep_each_level_offset():
    metadata = _metadata(num_classes=1)
    metadata["postprocessing"]["strides"] = [16, 32, 64]  # 8 + 2 + 1 points
    scores = np.zeros((11, 1), np.float32)
    bins = np.zeros((11, 4), np.int64)
    scores[10] = 0.9  # the P(64) point at (0, 0)
    bins[10] = [0, 0, 1, 1]  # [0, 0, 64, 64] clipped to [0, 0, 32, 64]
    scores[1] = 0.4  # a level-0 point far from it in score
    bins[1] = [0, 0, 0, 0]
    metadata["postprocessing"]["pre_nms_top_k"] = 1
    det = npp.postprocess(scores, _reg(bins), metadata)
    np.testing.assert_allclose(det["scores"], [0.9, 0.4], atol=1e-7)
    np.testing.assert_allclose(det["boxes"], [[0, 0, 32, 64], [16, 0, 16, 0]], atol=1e-4)


def test_postprocess_many_ties_keep_the_lower_indices():
    metadata = _metadata(num_classes=1, top_k=3)
    metadata["canvas_size"] = [320, 320]
    metadata["postprocessing"]["strides"] = [8]  # 1600 points in 40 rows of 40
    rng = np.random.default_rng(0)
    scores = rng.choice(np.array([0.5, 0.4, 0.3], np.float32), (1600, 1))  # hundreds of ties per value
    reg = _reg(np.zeros((1600, 4), np.int64))  # zero-size boxes on their points: no NMS overlap
    det = npp.postprocess(scores, reg, metadata)
    # the first three points scoring 0.5, in index order, as tf.math.top_k and a stable sort pick them
    first = np.flatnonzero(scores[:, 0] == np.float32(0.5))[:3]
    expected = np.stack([8 * (first % 40), 8 * (first // 40)] * 2, axis=1)
    np.testing.assert_allclose(det["boxes"], expected, atol=1e-4)
    # the score ranking over (point, class) pairs is stable too: the first 100 of the 0.5 points
    metadata["postprocessing"]["pre_nms_top_k"] = 1000
    det = npp.postprocess(scores, reg, metadata)
    first = np.flatnonzero(scores[:, 0] == np.float32(0.5))[:100]
    np.testing.assert_allclose(det["boxes"][:, :2], np.stack([8 * (first % 40), 8 * (first // 40)], axis=1))


def test_postprocess_cross_class_ties_keep_point_then_class_order():
    # 400 points x 3 classes, each score one of three values: (point, class) pairs tie across
    # classes and points. The pairs leave the per-level top-k ordered by the point's max-class
    # score, so their scores are not sorted: only a stable sort keeps equal scores in that
    # order (point by point, then class by class). Expected order: Python's sorted on tuples.
    metadata = _metadata(num_classes=3, max_det=250)
    metadata["canvas_size"] = [160, 160]
    metadata["postprocessing"]["strides"] = [8]  # 20 rows of 20
    rng = np.random.default_rng(3)
    values = np.array([0.5, 0.4, 0.3], np.float32)
    scores = values[rng.integers(0, 3, (400, 3))]
    reg = _reg(np.zeros((400, 4), np.int64))  # zero-size boxes on their points: NMS suppresses nothing
    det = npp.postprocess(scores, reg, metadata)
    kept = sorted(range(400), key=lambda p: (-float(scores[p].max()), p))  # the level's top-k, stable
    rank = {p: r for r, p in enumerate(kept)}
    pairs = sorted(
        ((p, c) for p in range(400) for c in range(3)), key=lambda pc: (-float(scores[pc]), rank[pc[0]], pc[1])
    )[:250]
    points = np.array([p for p, _ in pairs])
    np.testing.assert_array_equal(det["labels"], [c for _, c in pairs])
    np.testing.assert_allclose(det["boxes"][:, :2], np.stack([8 * (points % 20), 8 * (points // 20)], axis=1))
    np.testing.assert_allclose(det["scores"], [scores[pc] for pc in pairs])
    # 250 detections all at 0.5: ties at every position, across points and classes
    assert np.all(det["scores"] == np.float32(0.5))
