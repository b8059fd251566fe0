"""Reference tests for keras_gfocal.boxes (IoU, GIoU, box coding, priors)."""

import math

import keras
import numpy as np
import numpy_reference as ref

from keras_gfocal import boxes as kb

RTOL = 1e-5
ATOL = 1e-6


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def random_boxes(rng, n, size=100.0, min_wh=1.0, max_wh=60.0):
    xy = rng.uniform(0, size, size=(n, 2))
    wh = rng.uniform(min_wh, max_wh, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------
# IoU / GIoU
# ---------------------------------------------------------------------------


def test_pairwise_iou_hand_values():
    a = np.array([[0, 0, 2, 2], [10, 10, 20, 30]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 1, 1], [5, 5, 6, 6], [0, 0, 2, 2], [15, 10, 25, 30]], np.float32)
    expected = np.array(
        [
            [1 / 7, 1 / 4, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 100.0 / 300.0],
        ]
    )
    np.testing.assert_allclose(ref.pairwise_iou(a, b), expected, rtol=1e-6, atol=1e-7)
    got = to_np(kb.pairwise_iou(a, b))
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_pairwise_iou_random_against_reference():
    rng = np.random.default_rng(10)
    a = random_boxes(rng, 17)
    b = random_boxes(rng, 9)
    got = to_np(kb.pairwise_iou(a, b))
    np.testing.assert_allclose(got, ref.pairwise_iou(a, b), rtol=RTOL, atol=ATOL)
    got_t = to_np(kb.pairwise_iou(b, a))
    np.testing.assert_allclose(got_t, got.T, rtol=RTOL, atol=ATOL)


def test_pairwise_iou_accepts_tensors_and_empty_second_set():
    a = keras.ops.convert_to_tensor(np.array([[0, 0, 2, 2]], np.float32))
    b = keras.ops.convert_to_tensor(np.zeros((0, 4), np.float32))
    got = to_np(kb.pairwise_iou(a, b))
    assert got.shape == (1, 0)


def test_aligned_iou_and_giou_hand_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 4, 4]], np.float32)
    b = np.array([[0, 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3], [1, 1, 3, 3]], np.float32)
    iou = np.array([1.0, 0.0, 1 / 7, 0.25])
    giou = np.array([1.0, -1 / 3, 1 / 7 - 2 / 9, 0.25])
    np.testing.assert_allclose(ref.aligned_iou(a, b), iou, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref.aligned_giou(a, b), giou, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_np(kb.aligned_iou(a, b)), iou, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(to_np(kb.aligned_giou(a, b)), giou, rtol=RTOL, atol=ATOL)


def test_aligned_iou_giou_random_against_reference():
    rng = np.random.default_rng(11)
    a = random_boxes(rng, 64)
    b = random_boxes(rng, 64)
    np.testing.assert_allclose(to_np(kb.aligned_iou(a, b)), ref.aligned_iou(a, b), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(to_np(kb.aligned_giou(a, b)), ref.aligned_giou(a, b), rtol=RTOL, atol=ATOL)
    # aligned IoU is the diagonal of the pairwise IoU
    np.testing.assert_allclose(to_np(kb.aligned_iou(a, b)), np.diag(to_np(kb.pairwise_iou(a, b))), rtol=RTOL, atol=ATOL)


def test_zero_area_boxes_give_finite_iou():
    # degenerate (zero-area) boxes: eps in the denominators keeps everything finite and 0
    a = np.array([[5, 5, 5, 5], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 5, 5, 5], [0, 0, 0, 0]], np.float32)
    iou = to_np(kb.aligned_iou(a, b))
    giou = to_np(kb.aligned_giou(a, b))
    assert np.all(np.isfinite(iou)) and np.all(np.isfinite(giou))
    np.testing.assert_allclose(iou, [0.0, 0.0], atol=ATOL)
    np.testing.assert_allclose(giou, [0.0, 0.0], atol=ATOL)
    np.testing.assert_allclose(to_np(kb.pairwise_iou(a, b)), np.zeros((2, 2)), atol=ATOL)


# ---------------------------------------------------------------------------
# distance <-> box coding
# ---------------------------------------------------------------------------


def test_distance_to_box_hand_values():
    points = np.array([[10.0, 20.0], [0.0, 0.0]], np.float32)
    dist = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 5.0, 6.0, 0.5]], np.float32)
    expected = np.array([[9.0, 18.0, 13.0, 24.0], [0.0, -5.0, 6.0, 0.5]])
    got = to_np(kb.distance_to_box(points, dist))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_distance_to_box_leading_dims():
    rng = np.random.default_rng(12)
    points = rng.uniform(0, 100, size=(2, 5, 2)).astype(np.float32)
    dist = rng.uniform(0, 30, size=(2, 5, 4)).astype(np.float32)
    got = to_np(kb.distance_to_box(points, dist))
    assert got.shape == (2, 5, 4)
    np.testing.assert_allclose(got, ref.distance_to_box(points, dist), rtol=RTOL, atol=ATOL)


def test_box_to_distance_hand_values_and_clipping():
    max_d = 16 - 0.1
    points = np.array([[10.0, 10.0], [10.0, 10.0], [4.0, 4.0]], np.float32)
    boxes = np.array(
        [
            [0.0, 5.0, 40.0, 12.0],  # (10, 5, 30, 2) -> r clipped to 15.9
            [12.0, 0.0, 20.0, 20.0],  # point left of the box: l = -2 -> 0
            [1.0, 2.0, 5.0, 7.5],  # inside, no clipping
        ],
        np.float32,
    )
    expected = np.array([[10.0, 5.0, 15.9, 2.0], [0.0, 10.0, 10.0, 10.0], [3.0, 2.0, 1.0, 3.5]])
    np.testing.assert_allclose(ref.box_to_distance(points, boxes, max_d), expected, rtol=1e-6)
    got = to_np(kb.box_to_distance(points, boxes, max_d))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_box_to_distance_roundtrip_and_random():
    rng = np.random.default_rng(13)
    points = rng.uniform(20, 80, size=(3, 7, 2)).astype(np.float32)
    dist = rng.uniform(0.5, 15.0, size=(3, 7, 4)).astype(np.float32)
    boxes = ref.distance_to_box(points, dist).astype(np.float32)
    got = to_np(kb.box_to_distance(points, boxes, 15.9))
    assert got.shape == (3, 7, 4)
    np.testing.assert_allclose(got, dist, rtol=RTOL, atol=1e-5)
    far = rng.uniform(-50, 150, size=(3, 7, 4)).astype(np.float32)
    np.testing.assert_allclose(
        to_np(kb.box_to_distance(points, far, 15.9)), ref.box_to_distance(points, far, 15.9), rtol=RTOL, atol=ATOL
    )


# ---------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------


def test_make_points_square_image():
    points, strides, counts = kb.make_points(128, 128)
    points, strides = to_np(points), to_np(strides)
    assert counts == [256, 64, 16, 4, 1]
    assert all(type(c) is int for c in counts)
    assert points.dtype == np.float32 and strides.dtype == np.float32
    assert points.shape == (341, 2) and strides.shape == (341,)
    # P3 first, row-major (y outer, x inner), no half-cell offset
    np.testing.assert_array_equal(points[:3], [[0, 0], [8, 0], [16, 0]])
    np.testing.assert_array_equal(points[16], [0, 8])
    np.testing.assert_array_equal(points[255], [120, 120])
    np.testing.assert_array_equal(points[256:259], [[0, 0], [16, 0], [32, 0]])
    np.testing.assert_array_equal(points[336:341], [[0, 0], [64, 0], [0, 64], [64, 64], [0, 0]])
    np.testing.assert_array_equal(strides[:256], 8)
    np.testing.assert_array_equal(strides[256:320], 16)
    np.testing.assert_array_equal(strides[-1], 128)
    rp, rs, rc = ref.make_points(128, 128)
    np.testing.assert_array_equal(points, rp)
    np.testing.assert_array_equal(strides, rs)


def test_make_points_non_multiple_image_uses_ceil():
    # 100 x 70: ceil(100/8)=13 x ceil(70/8)=9, 7x5, 4x3, 2x2, 1x1
    points, strides, counts = kb.make_points(100, 70)
    assert counts == [13 * 9, 7 * 5, 4 * 3, 2 * 2, 1]
    rp, rs, rc = ref.make_points(100, 70)
    assert rc == counts
    np.testing.assert_array_equal(to_np(points), rp)
    np.testing.assert_array_equal(to_np(strides), rs)
    # last point of P3 is (8*8, 12*8) = (64, 96)
    np.testing.assert_array_equal(to_np(points)[13 * 9 - 1], [64, 96])


def test_make_points_custom_strides():
    points, strides, counts = kb.make_points(32, 48, strides=(8, 16))
    assert counts == [4 * 6, 2 * 3]
    rp, rs, _ = ref.make_points(32, 48, strides=(8, 16))
    np.testing.assert_array_equal(to_np(points), rp)
    np.testing.assert_array_equal(to_np(strides), rs)


def test_points_to_anchors():
    points = np.array([[0.0, 0.0], [24.0, 8.0], [64.0, 128.0]], np.float32)
    strides = np.array([8.0, 16.0, 32.0], np.float32)
    expected = np.array([[-32, -32, 32, 32], [-40, -56, 88, 72], [-64, 0, 192, 256]], np.float64)
    np.testing.assert_allclose(ref.points_to_anchors(points, strides), expected)
    got = to_np(kb.points_to_anchors(points, strides))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    got4 = to_np(kb.points_to_anchors(points, strides, octave_base_scale=4))
    np.testing.assert_allclose(got4, ref.points_to_anchors(points, strides, 4), rtol=RTOL, atol=ATOL)
    assert math.isclose(float(got[1, 2] - got[1, 0]), 8 * 16)


def test_feature_map_sizes_ceil_one_pixel_over():
    # one pixel over a multiple of the stride still needs its own cell: ceil(65 / 8) = 9
    assert kb.feature_map_sizes(65, 33, (8, 16)) == [(9, 5), (5, 3)]
    assert kb.feature_map_sizes(64, 32, (8, 16)) == [(8, 4), (4, 2)]


def test_make_points_strides_other_than_the_defaults_first():
    points, strides, counts = kb.make_points(64, 32, strides=(16, 32))
    assert counts == [4 * 2, 2 * 1]
    np.testing.assert_array_equal(to_np(strides), [16] * 8 + [32] * 2)
    np.testing.assert_array_equal(to_np(points)[[1, 2, 8, 9]], [[16, 0], [0, 16], [0, 0], [0, 32]])


def test_box_area_fractional_and_inverted():
    area = to_np(kb.box_area(np.array([[0, 0, 0.5, 2], [0, 0, 3, 0.25], [5, 5, 4, 7], [0, 0, 2, 3]], np.float32)))
    np.testing.assert_allclose(area, [1.0, 0.75, 0.0, 6.0])


def test_integer_boxes_become_float32_and_float64_stays():
    ints = np.array([[0, 0, 2, 3], [1, 1, 2, 2]], np.int32)
    area = kb.box_area(ints)
    assert keras.backend.standardize_dtype(area.dtype) == "float32"
    np.testing.assert_allclose(to_np(area), [6, 1])
    iou = kb.pairwise_iou(ints, ints)
    assert keras.backend.standardize_dtype(iou.dtype) == "float32"
    np.testing.assert_allclose(to_np(iou), [[1, 1 / 6], [1 / 6, 1]], rtol=1e-6)
    assert keras.backend.standardize_dtype(kb.box_area(ints.astype(np.float64)).dtype) == "float64"


def test_pairwise_iou_batched():
    a = np.array([[[0, 0, 10, 10], [0, 0, 10, 5]], [[0, 0, 4, 4], [2, 2, 6, 6]]], np.float32)
    b = np.array(
        [[[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], [[0, 0, 4, 4], [0, 0, 2, 2], [4, 4, 6, 6]]], np.float32
    )
    iou = to_np(kb.pairwise_iou(a, b))
    np.testing.assert_allclose(iou[0], [[1, 50 / 150, 0], [0.5, 25 / 125, 0]], rtol=1e-6)
    np.testing.assert_allclose(iou[1], [[1, 0.25, 0], [4 / 28, 0, 0.25]], rtol=1e-6)
