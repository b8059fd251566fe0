"""keras_gfocal.analysis.numbers: Pearson r, IoU, detection matching, correlations, by hand."""

import numpy as np
import pytest

from keras_gfocal.analysis.numbers import (
    SIGNALS,
    box_iou_matrix,
    correlations,
    match_detections,
    pearson,
    pearson_or_none,
)


def test_pearson_hand_values():
    x = [0.1, 0.2, 0.3, 0.4]
    assert pearson(x, [2.0 * v + 1.0 for v in x]) == pytest.approx(1.0)
    assert pearson(x, [-3.0 * v for v in x]) == pytest.approx(-1.0)
    # dx = (-1, 0, 1), dy = (-1, 1, 0): sum dx*dy = 1, sum dx^2 = sum dy^2 = 2 -> r = 1 / 2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # non-finite pairs are left out: the same three pairs as above
    assert pearson([1, 2, np.nan, 3], [1, 3, 5, 2]) == pytest.approx(0.5)
    assert np.isnan(pearson([1, 2, 3], [4, 4, 4]))  # no variance: undefined
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1.0], [2.0])
    with pytest.raises(ValueError, match="at least 2"):
        pearson([1.0, np.inf], [2.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        pearson([1, 2, 3], [1, 2])


def test_box_iou_matrix_hand_values():
    iou = box_iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 5], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[0.5, 50 / 150, 0.0]])


def test_match_detections_hand_case():
    gt_boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: class 0
            [20, 20, 40, 40],  # 1: class 1
            [0, 0, 10, 6],  # 2: class 0
            [0, 0, 0, 0],  # 3: padding
        ],
        np.float32,
    )
    gt_labels = np.array([0, 1, 0, -1])
    det_boxes = np.array(
        [
            [0, 0, 10, 5],  # class 0: IoU 0.5 with gt 0, 50/60 with gt 2 -> gt 2
            [5, 0, 15, 10],  # class 0: 50/150 with gt 0, 30/130 with gt 2 -> gt 0
            [20, 20, 40, 40],  # class 0 on the class-1 box: no same-class overlap
            [20, 20, 30, 40],  # class 1: 200/400 with gt 1
            [0, 0, 10, 10],  # class 1 on a class-0 box: the class-1 box does not overlap
            [0, 0, 40, 40],  # class 0: 100/1600 with gt 0 is below the floor
        ],
        np.float32,
    )
    det_labels = np.array([0, 0, 0, 1, 1, 0])
    gt_index, iou = match_detections(det_boxes, det_labels, gt_boxes, gt_labels, iou_floor=0.1)
    np.testing.assert_array_equal(gt_index, [2, 0, -1, 1, -1, -1])
    np.testing.assert_allclose(iou, [50 / 60, 50 / 150, 0.0, 0.5, 0.0, 100 / 1600], rtol=1e-6)
    # a lower floor admits the loose box
    gt_index, _ = match_detections(det_boxes, det_labels, gt_boxes, gt_labels, iou_floor=0.05)
    np.testing.assert_array_equal(gt_index, [2, 0, -1, 1, -1, 0])
    # no ground truth, no detections
    gt_index, iou = match_detections(det_boxes[:2], det_labels[:2], np.zeros((0, 4)), np.zeros((0,)))
    np.testing.assert_array_equal(gt_index, [-1, -1])
    np.testing.assert_array_equal(iou, [0.0, 0.0])
    gt_index, iou = match_detections(np.zeros((0, 4)), np.zeros((0,)), gt_boxes, gt_labels)
    assert gt_index.shape == (0,) and iou.shape == (0,)


def test_pearson_or_none_where_undefined():
    assert pearson_or_none([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson_or_none([1.0], [2.0]) is None  # fewer than 2 points
    assert pearson_or_none([1, 2, 3], [4, 4, 4]) is None  # no variance


def test_correlations_of_each_signal():
    iou = np.array([0.2, 0.5, 0.9])
    edge_top1 = np.array([[0.1] * 4, [0.3] * 4, [0.2] * 4])  # means 0.1, 0.3, 0.2
    results = {
        "iou": iou,
        "quality": iou * 2 + 1,
        "cls_score": -iou,
        "joint_score": np.array([1.0, 1.0, 1.0]),
        "edge_top1": edge_top1,
    }
    r = correlations(results)
    assert set(r) == set(SIGNALS)
    assert r["dgqp_quality"] == pytest.approx(1.0) and r["cls_score"] == pytest.approx(-1.0)
    assert r["joint_score"] is None  # constant
    # the mean of the four edges, against NumPy's own correlation
    assert r["edge_top1_mean"] == pytest.approx(np.corrcoef(iou, [0.1, 0.3, 0.2])[0, 1])
    assert correlations({**results, "quality": None})["dgqp_quality"] is None  # GFocalV1: no DGQP
