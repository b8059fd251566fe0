"""keras_gfocal.analysis: Pearson r, detection matching, and `analyze` end to end."""

import json
import os

import keras
import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.analysis import (
    SIGNALS,
    analyze,
    box_iou_matrix,
    match_detections,
    pearson,
)
from keras_gfocal.data import make_synthetic_coco


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
    gt_boxes = np.array([
        [0, 0, 10, 10],    # 0: class 0
        [20, 20, 40, 40],  # 1: class 1
        [0, 0, 10, 6],     # 2: class 0
        [0, 0, 0, 0],      # 3: padding
    ], np.float32)
    gt_labels = np.array([0, 1, 0, -1])
    det_boxes = np.array([
        [0, 0, 10, 5],     # class 0: IoU 0.5 with gt 0, 50/60 with gt 2 -> gt 2
        [5, 0, 15, 10],    # class 0: 50/150 with gt 0, 30/130 with gt 2 -> gt 0
        [20, 20, 40, 40],  # class 0 on the class-1 box: no same-class overlap
        [20, 20, 30, 40],  # class 1: 200/400 with gt 1
        [0, 0, 10, 10],    # class 1 on a class-0 box: the class-1 box does not overlap
        [0, 0, 40, 40],    # class 0: 100/1600 with gt 0 is below the floor
    ], np.float32)
    det_classes = np.array([0, 0, 0, 1, 1, 0])
    gt_index, iou = match_detections(det_boxes, det_classes, gt_boxes, gt_labels, iou_floor=0.1)
    np.testing.assert_array_equal(gt_index, [2, 0, -1, 1, -1, -1])
    np.testing.assert_allclose(iou, [50 / 60, 50 / 150, 0.0, 0.5, 0.0, 100 / 1600], rtol=1e-6)
    # a lower floor admits the loose box
    gt_index, _ = match_detections(det_boxes, det_classes, gt_boxes, gt_labels, iou_floor=0.05)
    np.testing.assert_array_equal(gt_index, [2, 0, -1, 1, -1, 0])
    # no ground truth, no detections
    gt_index, iou = match_detections(det_boxes[:2], det_classes[:2], np.zeros((0, 4)), np.zeros((0,)))
    np.testing.assert_array_equal(gt_index, [-1, -1])
    np.testing.assert_array_equal(iou, [0.0, 0.0])
    gt_index, iou = match_detections(np.zeros((0, 4)), np.zeros((0,)), gt_boxes, gt_labels)
    assert gt_index.shape == (0,) and iou.shape == (0,)


def test_analyze_end_to_end(tmp_path, capsys):
    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=8, num_val=4, image_size=(64, 64))
    keras.utils.set_random_seed(0)
    v2 = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, image_size=(64, 64))
    v1 = GFocalDetector.from_preset("gfocal_v1_tiny", num_classes=3, image_size=(64, 64))
    out = str(tmp_path / "analysis")
    # Untrained models score about 0.01 x 0.5: a zero threshold keeps their detections.
    report = analyze(v2, paths["val_ann_file"], paths["val_image_dir"], out, v1_model=v1,
                     score_threshold=0.0, verbose=True)

    for name in ("quality_vs_iou.png", "distributions.png"):
        path = os.path.join(out, name)
        assert report["files"][name[:-4]] == path
        assert os.path.getsize(path) > 10000, name
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    saved = json.load(open(os.path.join(out, "correlations.json")))
    assert saved == json.loads(json.dumps(report))
    assert saved["dgqp"] is True and saved["num_images"] == 4
    assert 2 <= saved["num_positives"] <= saved["num_detections"]
    assert 0.1 <= saved["mean_iou"] <= 1.0
    assert set(saved["pearson_iou"]) == set(SIGNALS)
    for key in SIGNALS:
        assert -1.0 <= saved["pearson_iou"][key] <= 1.0, key
    v1_report = saved["v1"]
    assert v1_report["dgqp"] is False and v1_report["num_positives"] >= 2
    assert set(v1_report["pearson_iou"]) == {"score", "edge_top1_mean"}
    assert -1.0 <= v1_report["pearson_iou"]["score"] <= 1.0
    printed = capsys.readouterr().out
    assert "DGQP quality" in printed and "GFocalV1 score" in printed


def test_collected_values_are_consistent(tmp_path):
    from keras_gfocal.analysis import collect_positive_predictions
    from keras_gfocal.data import CocoDataset

    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=1, num_val=3, image_size=(64, 64))
    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, image_size=(64, 64))
    dataset = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    res = collect_positive_predictions(model, dataset, batch_size=2, max_images=2, score_threshold=0.0)
    n = len(res["iou"])
    assert res["num_images"] == 2 and n > 0
    # the joint score is sigmoid(cls) * quality
    np.testing.assert_allclose(res["cls_score"] * res["quality"], res["joint_score"], rtol=1e-5)
    assert np.all((res["quality"] > 0) & (res["quality"] < 1))
    # the IoU is the real one of the box with its matched ground truth
    iou = np.diag(box_iou_matrix(res["boxes"], res["gt_boxes"]))
    np.testing.assert_allclose(res["iou"], iou, rtol=1e-5)
    assert np.all(res["iou"] >= 0.1)
    # edge top-1 is the largest softmax probability of each edge's 17 bins
    assert res["reg_logits"].shape == (n, 4, 17)
    z = res["reg_logits"] - res["reg_logits"].max(-1, keepdims=True)
    expected = (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).max(-1)
    np.testing.assert_allclose(res["edge_top1"], expected, rtol=1e-5)
    # the boxes are those the model decodes at the recorded points
    from keras_gfocal.postprocess import decode_boxes

    decoded = np.asarray(decode_boxes(res["points"], res["strides"], res["reg_logits"].reshape(1, n, 68), (64, 64)))
    np.testing.assert_allclose(decoded[0], res["boxes"], atol=1e-3)
    assert set(np.unique(res["image_ids"])) <= set(dataset.image_ids[:2])
