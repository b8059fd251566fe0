"""Reference tests for keras_gfocal.postprocess (expectation, decoding, NMS post-processing)."""

import math

import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf

from keras_gfocal import postprocess as pp

RTOL = 1e-5
ATOL = 1e-6


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------
# distribution_expectation
# ---------------------------------------------------------------------------


def test_expectation_hand_values():
    n1 = 17
    logits = np.zeros((1, 4 * n1), np.float32)
    # edge l: uniform -> 8
    # edge t: one dominant bin 5 (logit 50) -> 5
    logits[0, 1 * n1 + 5] = 50.0
    # edge r: two equal dominant bins 2 and 3 -> 2.5
    logits[0, 2 * n1 + 2] = 50.0
    logits[0, 2 * n1 + 3] = 50.0
    # edge b: bins 0 and 16 with probabilities 1/(1+e) and e/(1+e) (the rest ~0): 16 e/(1+e)
    logits[0, 3 * n1 + 0] = 40.0
    logits[0, 3 * n1 + 16] = 41.0
    expected = np.array([[8.0, 5.0, 2.5, 16.0 * math.e / (1.0 + math.e)]])
    np.testing.assert_allclose(ref.distribution_expectation(logits), expected, rtol=1e-6)
    got = to_np(pp.distribution_expectation(logits))
    assert got.shape == (1, 4)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-5)


def test_expectation_random_leading_dims_and_reg_max():
    rng = np.random.default_rng(20)
    x = rng.normal(0, 3, size=(2, 3, 4 * 17)).astype(np.float32)
    got = to_np(pp.distribution_expectation(x))
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, ref.distribution_expectation(x), rtol=RTOL, atol=1e-5)
    x7 = rng.normal(0, 3, size=(5, 4 * 8)).astype(np.float32)
    got7 = to_np(pp.distribution_expectation(x7, reg_max=7))
    np.testing.assert_allclose(got7, ref.distribution_expectation(x7, reg_max=7), rtol=RTOL, atol=1e-5)


def test_expectation_is_edge_major():
    # one dominant bin per edge at different positions: (l, t, r, b) = (1, 4, 9, 16)
    n1 = 17
    logits = np.full((4 * n1,), -30.0, np.float32)
    for e, k in enumerate((1, 4, 9, 16)):
        logits[e * n1 + k] = 30.0
    np.testing.assert_allclose(to_np(pp.distribution_expectation(logits[None])), [[1, 4, 9, 16]], atol=1e-4)


# ---------------------------------------------------------------------------
# decode_boxes
# ---------------------------------------------------------------------------


def _peaked_logits(dists, n1=17):
    """Logits whose expectation is (almost exactly) the given integer bin per edge."""
    x = np.full(dists.shape[:-1] + (4 * n1,), -40.0, np.float32)
    for idx in np.ndindex(dists.shape[:-1]):
        for e in range(4):
            x[idx + (e * n1 + int(dists[idx + (e,)]),)] = 40.0
    return x


def test_decode_boxes_hand_values_and_clipping():
    points = np.array([[16.0, 16.0], [64.0, 32.0], [0.0, 0.0]], np.float32)
    strides = np.array([8.0, 16.0, 32.0], np.float32)
    dists = np.array([[[1, 2, 3, 4], [2, 1, 16, 0], [1, 1, 1, 1]]])
    logits = _peaked_logits(dists)
    # image H = 40, W = 100
    # point 0 (s=8):  (16-8, 16-16, 16+24, 16+32) = (8, 0, 40, 48) -> y2 clipped to 40
    # point 1 (s=16): (64-32, 32-16, 64+256, 32+0) = (32, 16, 320, 32) -> x2 clipped to 100
    # point 2 (s=32): (-32, -32, 32, 32) -> (0, 0, 32, 32)
    expected = np.array([[[8, 0, 40, 40], [32, 16, 100, 32], [0, 0, 32, 32]]], np.float64)
    np.testing.assert_allclose(ref.decode_boxes(points, strides, logits, (40, 100)), expected, atol=1e-9)
    got = to_np(pp.decode_boxes(points, strides, logits, image_shape=(40, 100)))
    assert got.shape == (1, 3, 4)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-4)


def test_decode_boxes_random_against_reference():
    rng = np.random.default_rng(21)
    points, strides, counts = ref.make_points(64, 96)
    points = points.astype(np.float32)
    strides = strides.astype(np.float32)
    logits = rng.normal(0, 2, size=(2, points.shape[0], 68)).astype(np.float32)
    got = to_np(pp.decode_boxes(points, strides, logits, image_shape=(64, 96)))
    exp = ref.decode_boxes(points, strides, logits, (64, 96))
    assert got.shape == (2, points.shape[0], 4)
    np.testing.assert_allclose(got, exp, rtol=RTOL, atol=2e-5)
    assert got[..., 0].min() >= 0 and got[..., 2].max() <= 96
    assert got[..., 1].min() >= 0 and got[..., 3].max() <= 64


def test_decode_boxes_reg_max_argument():
    rng = np.random.default_rng(22)
    points = rng.uniform(0, 50, size=(6, 2)).astype(np.float32)
    strides = np.full((6,), 8.0, np.float32)
    logits = rng.normal(0, 2, size=(1, 6, 32)).astype(np.float32)
    got = to_np(pp.decode_boxes(points, strides, logits, image_shape=(200, 200), reg_max=7))
    np.testing.assert_allclose(got, ref.decode_boxes(points, strides, logits, (200, 200), 7), rtol=RTOL, atol=2e-5)


# ---------------------------------------------------------------------------
# postprocess_detections
# ---------------------------------------------------------------------------


def _hand_case():
    """B=2, C=3, levels [4, 2]. Scores not listed are 0.01 (below the 0.05 threshold)."""
    scores = np.full((2, 6, 3), 0.01, np.float32)
    boxes = np.zeros((2, 6, 4), np.float32)
    b = boxes[0]
    b[0] = [0, 0, 10, 10]
    scores[0, 0, 0] = 0.9  # kept
    b[1] = [1, 0, 11, 10]
    scores[0, 1, 0] = 0.8  # same class, IoU 90/110 = 0.82 > 0.6 with p0 -> suppressed
    b[2] = [1, 0, 11, 10]
    scores[0, 2, 1] = 0.7  # same box as p1 but class 1 -> kept
    b[3] = [50, 50, 60, 60]
    scores[0, 3, 2] = 0.04  # below the threshold -> dropped
    b[4] = [20, 20, 40, 40]
    scores[0, 4, 2] = 0.5  # level 2, kept
    b[5] = [4, 0, 14, 10]
    scores[0, 5, 1] = 0.3  # class 1, IoU 70/130 = 0.54 <= 0.6 with p2 -> kept
    boxes[1] = boxes[0]  # image 1: same boxes, nothing above the threshold
    expected_boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 40, 40], [4, 0, 14, 10]], np.float32)
    expected_scores = np.array([0.9, 0.7, 0.5, 0.3], np.float32)
    expected_classes = np.array([0, 1, 2, 1])
    return scores, boxes, [4, 2], expected_boxes, expected_scores, expected_classes


def _check_padding(out, b, k, max_det):
    np.testing.assert_array_equal(out["boxes"][b, k:], np.zeros((max_det - k, 4)))
    np.testing.assert_array_equal(out["scores"][b, k:], np.zeros((max_det - k,)))
    np.testing.assert_array_equal(out["labels"][b, k:], np.full((max_det - k,), -1))


def _run(*args, **kw):
    out = pp.postprocess_detections(*args, **kw)
    assert set(out.keys()) >= {"boxes", "scores", "labels", "num_detections"}
    res = {k: to_np(out[k]) for k in ("boxes", "scores", "labels", "num_detections")}
    assert res["labels"].dtype == np.int32
    assert res["num_detections"].dtype == np.int32
    return res


def _assert_equals_reference(out, exp):
    """Every output of ``postprocess_detections`` equals the NumPy reference's: counts and labels exactly."""
    np.testing.assert_array_equal(out["num_detections"], exp["num_detections"])
    np.testing.assert_allclose(out["scores"], exp["scores"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["boxes"], exp["boxes"], rtol=RTOL, atol=1e-5)
    np.testing.assert_array_equal(out["labels"], exp["labels"])


def test_postprocess_hand_case():
    scores, boxes, nlp, eb, es, ec = _hand_case()
    r = ref.postprocess_detections(scores, boxes, nlp)
    np.testing.assert_array_equal(r["num_detections"], [4, 0])
    np.testing.assert_allclose(r["boxes"][0, :4], eb)
    np.testing.assert_array_equal(r["labels"][0, :4], ec)

    out = _run(scores, boxes, nlp)
    assert out["boxes"].shape == (2, 100, 4)
    assert out["scores"].shape == (2, 100)
    assert out["labels"].shape == (2, 100)
    assert out["num_detections"].shape == (2,)
    np.testing.assert_array_equal(out["num_detections"], [4, 0])
    np.testing.assert_allclose(out["boxes"][0, :4], eb, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["scores"][0, :4], es, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out["labels"][0, :4], ec)
    _check_padding(out, 0, 4, 100)
    _check_padding(out, 1, 0, 100)


def test_postprocess_score_threshold_is_strict_side_and_configurable():
    scores, boxes, nlp, *_ = _hand_case()
    scores = scores.copy()
    scores[0, 3, 2] = 0.0501  # just above 0.05 -> now kept
    out = _run(scores, boxes, nlp)
    np.testing.assert_array_equal(out["num_detections"], [5, 0])
    np.testing.assert_allclose(out["scores"][0, :5], [0.9, 0.7, 0.5, 0.3, 0.0501], rtol=RTOL)
    np.testing.assert_allclose(out["boxes"][0, 4], [50, 50, 60, 60], rtol=RTOL)
    scores[0, 3, 2] = 0.0499
    out = _run(scores, boxes, nlp)
    np.testing.assert_array_equal(out["num_detections"], [4, 0])
    # a higher threshold drops the 0.3 detection
    out = _run(scores, boxes, nlp, score_threshold=0.35)
    np.testing.assert_array_equal(out["num_detections"], [3, 0])
    np.testing.assert_allclose(out["scores"][0, :3], [0.9, 0.7, 0.5], rtol=RTOL)


def test_postprocess_takes_an_integer_score_threshold():
    # score_threshold=0, a Python int: every score strictly above 0 is kept, the zeros are not.
    scores = np.array([[[0.9, 0.0], [0.0, 0.3], [0.0, 0.0]]], np.float32)
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]], np.float32)
    out = _run(scores, boxes, [3], score_threshold=0, max_detections=4)
    np.testing.assert_array_equal(out["num_detections"], [2])
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.3, 0.0, 0.0], rtol=RTOL)
    np.testing.assert_array_equal(out["labels"][0], [0, 1, -1, -1])


def test_postprocess_iou_threshold_argument():
    scores, boxes, nlp, *_ = _hand_case()
    # at IoU threshold 0.5 the 0.3 box (IoU 0.54 with the 0.7 box of class 1) is suppressed too
    out = _run(scores, boxes, nlp, iou_threshold=0.5)
    np.testing.assert_array_equal(out["num_detections"], [3, 0])
    np.testing.assert_array_equal(out["labels"][0, :3], [0, 1, 2])
    # at 0.9 nothing overlaps enough: the 0.8 box of class 0 survives
    out = _run(scores, boxes, nlp, iou_threshold=0.9)
    np.testing.assert_array_equal(out["num_detections"], [5, 0])
    np.testing.assert_allclose(out["scores"][0, :5], [0.9, 0.8, 0.7, 0.5, 0.3], rtol=RTOL)


def test_postprocess_point_with_two_classes_gives_two_detections():
    # class-wise NMS works on (point, class) pairs: one box scoring 0.6 for class 0 and
    # 0.2 for class 2 yields two detections, one per class.
    scores = np.full((1, 3, 3), 0.0, np.float32)
    boxes = np.array([[[0, 0, 10, 10], [30, 30, 40, 40], [60, 60, 70, 70]]], np.float32)
    scores[0, 0, 0] = 0.6
    scores[0, 0, 2] = 0.2
    scores[0, 1, 1] = 0.4
    out = _run(scores, boxes, [3])
    np.testing.assert_array_equal(out["num_detections"], [3])
    np.testing.assert_allclose(out["scores"][0, :3], [0.6, 0.4, 0.2], rtol=RTOL)
    np.testing.assert_array_equal(out["labels"][0, :3], [0, 1, 2])
    np.testing.assert_allclose(out["boxes"][0, :3], [[0, 0, 10, 10], [30, 30, 40, 40], [0, 0, 10, 10]])


def test_postprocess_pre_nms_top_k_per_level_by_max_class_score():
    # level 0 has 4 points, level 1 has 2. pre_nms_top_k=2 keeps, per level, the two points
    # with the highest *max-class* score: p0 (0.9) and p1 (0.8) on level 0 -- p3 has the
    # larger sum (1.8) but a max of 0.6 -- and both level-1 points.
    scores = np.zeros((1, 6, 3), np.float32)
    boxes = np.array([[[20 * i, 0, 20 * i + 10, 10] for i in range(6)]], np.float32)
    scores[0, 0] = [0.9, 0.0, 0.0]
    scores[0, 1] = [0.0, 0.8, 0.0]
    scores[0, 2] = [0.0, 0.0, 0.7]
    scores[0, 3] = [0.6, 0.6, 0.6]
    scores[0, 4] = [0.0, 0.3, 0.0]
    scores[0, 5] = [0.0, 0.0, 0.2]
    out = _run(scores, boxes, [4, 2], pre_nms_top_k=2)
    np.testing.assert_array_equal(out["num_detections"], [4])
    np.testing.assert_allclose(out["scores"][0, :4], [0.9, 0.8, 0.3, 0.2], rtol=RTOL)
    np.testing.assert_array_equal(out["labels"][0, :4], [0, 1, 1, 2])
    np.testing.assert_allclose(out["boxes"][0, :4], boxes[0, [0, 1, 4, 5]])
    # without the cap: all 3 + 1 + 1 + 1 + 1 + 1 = 8 (p3 contributes one per class)
    out = _run(scores, boxes, [4, 2])
    np.testing.assert_array_equal(out["num_detections"], [8])
    np.testing.assert_allclose(out["scores"][0, :8], [0.9, 0.8, 0.7, 0.6, 0.6, 0.6, 0.3, 0.2], rtol=RTOL)


def test_postprocess_max_detections_keeps_best_sorted():
    scores = np.zeros((1, 10, 2), np.float32)
    boxes = np.array([[[20 * i, 0, 20 * i + 10, 10] for i in range(10)]], np.float32)
    vals = np.array([0.15, 0.95, 0.35, 0.75, 0.55, 0.25, 0.85, 0.45, 0.65, 0.06], np.float32)
    scores[0, :, 1] = vals
    out = _run(scores, boxes, [10], max_detections=4)
    assert out["boxes"].shape == (1, 4, 4)
    np.testing.assert_array_equal(out["num_detections"], [4])
    np.testing.assert_allclose(out["scores"][0], [0.95, 0.85, 0.75, 0.65], rtol=RTOL)
    np.testing.assert_allclose(out["boxes"][0], boxes[0, [1, 6, 3, 8]])
    np.testing.assert_array_equal(out["labels"][0], [1, 1, 1, 1])


def _random_case(rng, counts, batch, num_classes):
    a = sum(counts)
    while True:
        # jittered copies of a few object boxes: NMS has plenty to suppress, and some
        # pairs of the same object stay below the IoU threshold
        obj_c = rng.uniform(10, 54, size=(batch, 6, 2))
        obj_wh = rng.uniform(8, 30, size=(batch, 6, 2))
        pick = rng.integers(0, 6, size=(batch, a))
        centres = np.take_along_axis(obj_c, pick[..., None], axis=1) + rng.normal(0, 1.5, size=(batch, a, 2))
        wh = np.take_along_axis(obj_wh, pick[..., None], axis=1) * rng.uniform(0.8, 1.25, size=(batch, a, 2))
        boxes = np.concatenate([centres - wh / 2, centres + wh / 2], axis=-1).astype(np.float32)
        scores = (rng.uniform(0, 1, size=(batch, a, num_classes)) ** 3).astype(np.float32)
        if np.min(np.abs(scores - 0.05)) < 1e-4:
            continue
        ok = True
        for b in range(batch):
            iou = ref.pairwise_iou(boxes[b], boxes[b])
            if np.min(np.abs(iou - 0.6)) < 1e-4:
                ok = False
            # float32 scores are compared exactly by both sides: only exact ties are ambiguous
            above = scores[b][scores[b] > 0.05]
            if len(np.unique(above)) != len(above):
                ok = False
        if ok:
            return scores, boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_postprocess_random_against_reference(seed):
    rng = np.random.default_rng(30 + seed)
    _, _, counts = ref.make_points(64, 64)  # [64, 16, 4, 1, 1]
    scores, boxes = _random_case(rng, counts, batch=2, num_classes=4)
    kw = dict(pre_nms_top_k=20, max_detections=50)  # some images fill all 50 rows, some do not
    exp = ref.postprocess_detections(scores, boxes, counts, **kw)
    out = _run(scores, boxes, counts, **kw)
    assert np.all(exp["num_detections"] > 0)
    _assert_equals_reference(out, exp)


def test_postprocess_defaults_against_reference():
    rng = np.random.default_rng(40)
    _, _, counts = ref.make_points(64, 64)
    scores, boxes = _random_case(rng, counts, batch=1, num_classes=3)
    exp = ref.postprocess_detections(scores, boxes, counts)
    out = _run(scores, boxes, counts)
    _assert_equals_reference(out, exp)


def test_postprocess_no_hidden_cap_on_nms_candidates():
    # REFERENCE.md: per level the 1000 best points, drop scores <= 0.05, class-wise NMS,
    # best 100. Nothing else limits what enters NMS. Five levels of 1000 points with the
    # defaults: 4999 copies of one box (scores 0.9 .. 0.4, all suppressed by the first) and
    # one separate box with the lowest score (0.3). Both boxes must be detected.
    counts = [1000] * 5
    a = sum(counts)
    boxes = np.tile(np.array([0, 0, 10, 10], np.float32), (1, a, 1))
    scores = np.linspace(0.9, 0.4, a - 1).astype(np.float32)
    scores = np.concatenate([scores, [0.3]]).astype(np.float32)[None, :, None]
    boxes[0, -1] = [50, 50, 60, 60]
    exp = ref.postprocess_detections(scores, boxes, counts)
    np.testing.assert_array_equal(exp["num_detections"], [2])
    out = _run(scores, boxes, counts)
    np.testing.assert_array_equal(out["num_detections"], [2])
    np.testing.assert_allclose(out["scores"][0, :2], [0.9, 0.3], rtol=RTOL)
    np.testing.assert_allclose(out["boxes"][0, :2], [[0, 0, 10, 10], [50, 50, 60, 60]])


def test_edge_confidence_hand_values():
    # edge l: uniform -> 1/17; edge t: probabilities 0.5, 0.3, 0.2 -> 0.5;
    # edge r: one dominant logit; edge b: shifting all logits changes nothing
    probs_t = np.full(17, 1e-12)
    probs_t[[3, 4, 5]] = [0.5, 0.3, 0.2]
    dominant = np.zeros(17)
    dominant[16] = 50.0
    logits = np.concatenate([np.zeros(17), np.log(probs_t), dominant, np.log(probs_t) + 7.0])[None].astype(np.float32)
    got = to_np(pp.edge_confidence(logits, reg_max=16))
    np.testing.assert_allclose(got, [[1 / 17, 0.5, 1.0, 0.5]], rtol=1e-5)
    # reg_max 16 is the default
    np.testing.assert_allclose(to_np(pp.edge_confidence(logits)), [[1 / 17, 0.5, 1.0, 0.5]], rtol=1e-5)


@pytest.mark.parametrize("reg_max", [16, 7])
def test_edge_confidence_random_against_numpy(reg_max):
    rng = np.random.default_rng(50 + reg_max)
    logits = rng.normal(0, 3, size=(2, 5, 4 * (reg_max + 1))).astype(np.float32)
    expected = ref.softmax(logits.reshape(2, 5, 4, reg_max + 1).astype(np.float64)).max(axis=-1)
    got = to_np(pp.edge_confidence(logits, reg_max=reg_max))
    assert got.shape == (2, 5, 4)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_postprocess_carries_point_features_of_each_detection():
    # the hand case's detections come from points 0, 2, 4, 5 of image 0
    scores, boxes, nlp, *_ = _hand_case()
    point_ids = np.tile(np.arange(6, dtype=np.float32)[None, :, None], (2, 1, 2))
    point_ids[..., 1] *= 10
    out = pp.postprocess_detections(scores, boxes, nlp, point_features=point_ids)
    features = to_np(out["point_features"])
    assert features.shape == (2, 100, 2)
    assert to_np(out["boxes"]).shape == (2, 100, 4)  # the boxes without the carried features
    np.testing.assert_array_equal(features[0, :4], [[0, 0], [2, 20], [4, 40], [5, 50]])
    np.testing.assert_array_equal(features[0, 4:], 0.0)
    np.testing.assert_array_equal(features[1], 0.0)


@pytest.mark.parametrize("batch", [1, 2])
def test_postprocess_point_features_random_against_reference(batch):
    # features = a function of each point's (unique) box, so the reference's boxes
    # say which feature each detection must carry; batch 1 takes the loop-free path
    rng = np.random.default_rng(60 + batch)
    _, _, counts = ref.make_points(64, 64)
    scores, boxes = _random_case(rng, counts, batch=batch, num_classes=3)
    features = np.stack([boxes[..., 0] * 3 + 1, boxes[..., 3] - boxes[..., 1]], axis=-1)
    kw = dict(pre_nms_top_k=20, max_detections=50)
    exp = ref.postprocess_detections(scores, boxes, counts, **kw)
    out = pp.postprocess_detections(scores, boxes, counts, point_features=features, **kw)
    got = to_np(out["point_features"])
    for b in range(batch):
        n = int(exp["num_detections"][b])
        eb = exp["boxes"][b, :n]
        np.testing.assert_allclose(
            got[b, :n], np.stack([eb[:, 0] * 3 + 1, eb[:, 3] - eb[:, 1]], -1), rtol=RTOL, atol=1e-4
        )
        np.testing.assert_array_equal(got[b, n:], 0.0)


# ---------------------------------------------------------------------------
# level sizes known only in the graph (inputs of varying height and width)
# ---------------------------------------------------------------------------


def _run_dynamic(scores, boxes, counts, **kw):
    """postprocess_detections in a graph where the batch, the point count and every level's size
    are tensors (as for an input of unknown height and width)."""
    import tensorflow as tf

    num_classes = scores.shape[-1]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, num_classes], tf.float32),
            tf.TensorSpec([None, None, 4], tf.float32),
            tf.TensorSpec([len(counts)], tf.int32),
        ]
    )
    def run(s, b, c):
        return pp.postprocess_detections(s, b, [c[i] for i in range(len(counts))], **kw)

    out = run(scores, boxes, np.asarray(counts, np.int32))
    return {k: to_np(out[k]) for k in ("boxes", "scores", "labels", "num_detections")}


@pytest.mark.parametrize("batch", [1, 2])
def test_postprocess_dynamic_level_sizes_against_reference(batch):
    rng = np.random.default_rng(60 + batch)
    _, _, counts = ref.make_points(64, 64)  # [64, 16, 4, 1, 1]: level 0 is cut to 20 points, the others not
    scores, boxes = _random_case(rng, counts, batch=batch, num_classes=3)
    kw = dict(pre_nms_top_k=20, max_detections=40)
    exp = ref.postprocess_detections(scores, boxes, counts, **kw)
    out = _run_dynamic(scores, boxes, counts, **kw)
    assert np.all(exp["num_detections"] > 0)
    _assert_equals_reference(out, exp)
    # the level cut matters here: without it the detections differ
    assert not np.array_equal(
        ref.postprocess_detections(scores, boxes, counts, max_detections=40)["scores"], exp["scores"]
    )


def test_postprocess_dynamic_level_of_exactly_top_k_keeps_index_order_for_ties():
    # Level 0 holds exactly pre_nms_top_k = 2 points: all are kept, in index order (as the static
    # path and the reference do), not re-ordered by score. The order shows at a cross-class tie:
    # point 0 scores (0.3, 0.2), point 1 (0.9, 0.3). Pairs (0, class 0) and (1, class 1) tie at
    # 0.3; by point index, class 0's detection comes first (the reference: class by class,
    # then a stable sort by score). Level 1: one point, below the threshold.
    scores = np.array([[[0.3, 0.2], [0.9, 0.3], [0.01, 0.01]]], np.float32)
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]], np.float32)
    kw = dict(pre_nms_top_k=2, max_detections=5)
    exp = ref.postprocess_detections(scores, boxes, [2, 1], **kw)
    np.testing.assert_array_equal(exp["labels"][0], [0, 0, 1, 1, -1])
    np.testing.assert_allclose(exp["scores"][0, :4], [0.9, 0.3, 0.3, 0.2], rtol=RTOL)
    np.testing.assert_allclose(exp["boxes"][0, :4], boxes[0, [1, 0, 1, 0]])
    for out in (_run(scores, boxes, [2, 1], **kw), _run_dynamic(scores, boxes, [2, 1], **kw)):
        np.testing.assert_array_equal(out["labels"], exp["labels"])
        np.testing.assert_allclose(out["scores"], exp["scores"], rtol=RTOL)
        np.testing.assert_allclose(out["boxes"], exp["boxes"])


def test_postprocess_classes_never_suppress_each_other_even_for_tiny_boxes():
    # Boxes within [0, 2]: class 1's box [0, 0, 1, 1] must not meet class 0's [1, 1, 2, 2] however
    # the classes are kept apart (a shift of at least the largest coordinate plus one).
    boxes = np.array([[[1, 1, 2, 2], [0, 0, 1, 1], [1, 1, 2, 2]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]], np.float32)
    out = _run(scores, boxes, [3], max_detections=4)
    exp = ref.postprocess_detections(scores, boxes, [3], max_detections=4)
    np.testing.assert_array_equal(exp["num_detections"], [2])  # point 2 is suppressed by point 0 (same box)
    np.testing.assert_array_equal(out["num_detections"], [2])
    np.testing.assert_allclose(out["scores"][0, :2], [0.9, 0.8], rtol=RTOL)
    np.testing.assert_array_equal(out["labels"][0], [0, 1, -1, -1])
    np.testing.assert_allclose(out["boxes"][0, :2], [[1, 1, 2, 2], [0, 0, 1, 1]])


def test_postprocess_two_images_of_one_point():
    scores = np.array([[[0.9, 0.1]], [[0.2, 0.6]]], np.float32)
    boxes = np.array([[[0, 0, 10, 10]], [[5, 5, 8, 9]]], np.float32)
    out = _run(scores, boxes, [1], max_detections=3)
    np.testing.assert_array_equal(out["num_detections"], [2, 2])
    np.testing.assert_allclose(out["scores"], [[0.9, 0.1, 0], [0.6, 0.2, 0]], rtol=RTOL)
    np.testing.assert_array_equal(out["labels"], [[0, 1, -1], [1, 0, -1]])
    np.testing.assert_allclose(out["boxes"][1, :2], [[5, 5, 8, 9]] * 2)


def test_postprocess_default_cut_is_1000_points_per_level():
    # One level of 1001 points, each a separate box: the lowest-scoring point is cut by the
    # default pre_nms_top_k of 1000, although it scores above the threshold.
    a = 1001
    x = np.arange(a, dtype=np.float32) * 20.0
    boxes = np.stack([x, np.zeros(a), x + 10.0, np.full(a, 10.0)], axis=-1).astype(np.float32)[None]
    scores = np.linspace(0.9, 0.1, a).astype(np.float32)[None, :, None]
    out = _run(scores, boxes, [a], max_detections=1001)
    np.testing.assert_array_equal(out["num_detections"], [1000])
    np.testing.assert_allclose(out["scores"][0, :1000], scores[0, :1000, 0], rtol=RTOL)
    assert out["scores"][0, 1000] == 0.0


@pytest.mark.parametrize("batch", [1, 3])
def test_postprocess_graph_outputs_have_static_shapes(batch):
    # Exports (TFLite, ONNX) need fixed output shapes: known in the graph, not just at run time.
    import tensorflow as tf

    fn = tf.function(lambda s, b, f: pp.postprocess_detections(s, b, [6], max_detections=7, point_features=f))
    concrete = fn.get_concrete_function(
        tf.TensorSpec([batch, 6, 3], tf.float32),
        tf.TensorSpec([batch, 6, 4], tf.float32),
        tf.TensorSpec([batch, 6, 2], tf.float32),
    )
    shapes = {k: v.shape.as_list() for k, v in concrete.structured_outputs.items()}
    assert shapes == {
        "boxes": [batch, 7, 4],
        "scores": [batch, 7],
        "labels": [batch, 7],
        "num_detections": [batch],
        "point_features": [batch, 7, 2],
    }


# ---------------------------------------------------------------------------
# point indices
# ---------------------------------------------------------------------------


def _run_dynamic_with_indices(scores, boxes, counts, **kw):
    """``_run_dynamic`` with ``return_point_indices``: every level's size a tensor."""
    import tensorflow as tf

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, scores.shape[-1]], tf.float32),
            tf.TensorSpec([None, None, 4], tf.float32),
            tf.TensorSpec([len(counts)], tf.int32),
        ]
    )
    def run(s, b, c):
        return pp.postprocess_detections(s, b, [c[i] for i in range(len(counts))], return_point_indices=True, **kw)

    return {k: to_np(v) for k, v in run(scores, boxes, np.asarray(counts, np.int32)).items()}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dynamic", [False, True])
def test_postprocess_point_indices_name_each_detections_point(batch, dynamic):
    # The box, and the score of the detected class, at the returned point index are the detection's;
    # the detections are those of the reference (the level cut to 20 points matters here).
    rng = np.random.default_rng(70 + batch)
    _, _, counts = ref.make_points(64, 64)  # [64, 16, 4, 1, 1]
    scores, boxes = _random_case(rng, counts, batch=batch, num_classes=3)
    kw = dict(pre_nms_top_k=20, max_detections=40)
    exp = ref.postprocess_detections(scores, boxes, counts, **kw)
    if dynamic:
        out = _run_dynamic_with_indices(scores, boxes, counts, **kw)
    else:
        out = {
            k: to_np(v)
            for k, v in pp.postprocess_detections(scores, boxes, counts, return_point_indices=True, **kw).items()
        }
    index = out["point_indices"]
    assert index.shape == (batch, 40) and index.dtype == np.int32
    _assert_equals_reference(out, exp)
    for b in range(batch):
        n = int(out["num_detections"][b])
        assert n > 0
        np.testing.assert_array_equal(index[b, n:], -1)
        assert np.all((index[b, :n] >= 0) & (index[b, :n] < sum(counts)))
        np.testing.assert_array_equal(out["boxes"][b, :n], boxes[b, index[b, :n]])
        np.testing.assert_array_equal(out["scores"][b, :n], scores[b, index[b, :n], out["labels"][b, :n]])
    # some detections come from beyond the first level, where the level offset counts
    assert np.any(index >= counts[0])


def test_postprocess_point_indices_are_off_by_default_and_change_nothing_else():
    rng = np.random.default_rng(80)
    _, _, counts = ref.make_points(64, 64)
    scores, boxes = _random_case(rng, counts, batch=2, num_classes=3)
    features = rng.uniform(size=boxes.shape[:2] + (2,)).astype(np.float32)
    plain = pp.postprocess_detections(scores, boxes, counts, point_features=features, pre_nms_top_k=20)
    assert set(plain) == {"boxes", "scores", "labels", "num_detections", "point_features"}
    both = pp.postprocess_detections(
        scores, boxes, counts, point_features=features, pre_nms_top_k=20, return_point_indices=True
    )
    assert set(both) == set(plain) | {"point_indices"}
    for key in plain:
        np.testing.assert_array_equal(to_np(both[key]), to_np(plain[key]))
    n = to_np(both["num_detections"])
    index = to_np(both["point_indices"])
    for b in range(2):
        np.testing.assert_array_equal(to_np(both["point_features"])[b, : n[b]], features[b, index[b, : n[b]]])


def test_labels_to_category_ids_maps_each_label_and_keeps_padding():
    labels = np.array([[2, 0, -1], [1, -1, -1]], np.float32)  # cast to int whatever comes in
    got = pp.labels_to_category_ids(labels, [1, 7, 90])
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), [[90, 1, -1], [7, -1, -1]])
    # without a dataset's ids the ids are the labels
    np.testing.assert_array_equal(pp.labels_to_category_ids(labels, None).numpy(), labels.astype(np.int32))
