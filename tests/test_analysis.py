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
    assert set(saved["pearson_iou"]) == set(SIGNALS)
    # Every number of the report, recomputed from the positives with NumPy's own correlation.
    from keras_gfocal.analysis import collect_positive_predictions
    from keras_gfocal.data import CocoDataset

    dataset = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    for model, part in ((v2, saved), (v1, saved["v1"])):
        res = collect_positive_predictions(model, dataset, score_threshold=0.0)
        assert part["num_positives"] == len(res["iou"]) >= 2
        assert part["num_detections"] == res["num_detections"]
        assert part["mean_iou"] == pytest.approx(float(np.mean(res["iou"])), rel=1e-6)
        signals = {"joint_score": res["joint_score"], "edge_top1_mean": res["edge_top1"].mean(axis=1)}
        if model is v2:
            signals.update(dgqp_quality=res["quality"], cls_score=res["cls_score"])
        else:
            signals["score"] = signals.pop("joint_score")
        assert set(part["pearson_iou"]) == set(signals)
        for key, values in signals.items():
            expected = np.corrcoef(res["iou"].astype(np.float64), values.astype(np.float64))[0, 1]
            assert part["pearson_iou"][key] == pytest.approx(expected, abs=1e-6), key
    assert saved["v1"]["dgqp"] is False
    printed = capsys.readouterr().out
    assert "DGQP quality" in printed and "GFocalV1 score" in printed


def _numpy_dgqp(reg_logits, layer, topk=4):
    """The DGQP written from REFERENCE.md: per edge the top-k softmax values and their mean
    (edge-major), Dense -> ReLU -> Dense -> sigmoid, with the layer's weights."""
    z = reg_logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top = -np.sort(-p, axis=-1)[..., :topk]
    feats = np.concatenate([top, top.mean(-1, keepdims=True)], axis=-1).reshape(len(z), -1)
    w1, b1 = (np.asarray(v, np.float64) for v in (layer.hidden.kernel, layer.hidden.bias))
    w2, b2 = (np.asarray(v, np.float64) for v in (layer.out.kernel, layer.out.bias))
    assert w1.shape == (4 * (topk + 1), layer.hidden_units)
    return 1.0 / (1.0 + np.exp(-(np.maximum(feats @ w1 + b1, 0.0) @ w2 + b2)[:, 0]))


def _classification_logits(model, images):
    """The cls branch's logits (before the DGQP product), level by level through the head's layers."""
    features = model.fpn(model.backbone(images, training=False), training=False)
    levels = []
    for feature in features:
        x = feature
        for layer in model.head.cls_tower:
            x = layer(x)
        x = np.asarray(model.head.cls_out(x), np.float64)
        levels.append(x.reshape(x.shape[0], -1, x.shape[-1]))
    return np.concatenate(levels, axis=1)


def test_collected_values_are_consistent(tmp_path):
    from keras_gfocal.analysis import collect_positive_predictions
    from keras_gfocal.data import CocoDataset, make_dataset

    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=1, num_val=3, image_size=(64, 64))
    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, image_size=(64, 64))
    dataset = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    res = collect_positive_predictions(model, dataset, batch_size=2, max_images=2, score_threshold=0.0)
    n = len(res["iou"])
    assert res["num_images"] == 2 and n > 0

    # Independent values at each positive's point: the same two images through the model's layers.
    images, _, meta = next(iter(make_dataset(dataset.records(skip_empty=False).take(2), training=False,
                                             batch_size=2, image_size=(64, 64))))
    row_of_image = {int(i): r for r, i in enumerate(np.asarray(meta["image_id"]))}
    rows = np.array([row_of_image[int(i)] for i in res["image_ids"]])
    # point index from the recorded point: level offset + row-major cell (levels of 8x8, 4x4, 2x2, 1x1, 1x1)
    offsets = {8: 0, 16: 64, 32: 80, 64: 84, 128: 85}
    xs, ys = res["points"][:, 0], res["points"][:, 1]
    side = {8: 8, 16: 4, 32: 2, 64: 1, 128: 1}
    index = np.array([offsets[int(s)] + int(y // s) * side[int(s)] + int(x // s)
                      for (x, y), s in zip(res["points"], res["strides"])])
    assert np.all(xs % res["strides"] == 0) and np.all(ys % res["strides"] == 0)
    logits = _classification_logits(model, images)
    out = model(images, training=False)
    reg = np.asarray(out["reg_logits"], np.float64)
    np.testing.assert_allclose(res["reg_logits"].reshape(n, -1), reg[rows, index], rtol=1e-5, atol=1e-5)
    cls_expected = 1.0 / (1.0 + np.exp(-logits[rows, index, res["labels"]]))
    np.testing.assert_allclose(res["cls_score"], cls_expected, rtol=1e-4)
    quality_expected = _numpy_dgqp(reg[rows, index].reshape(n, 4, 17), model.head.quality)
    np.testing.assert_allclose(res["quality"], quality_expected, rtol=1e-4)
    np.testing.assert_allclose(res["joint_score"], cls_expected * quality_expected, rtol=1e-4)
    np.testing.assert_allclose(res["joint_score"], np.asarray(out["cls_scores"])[rows, index, res["labels"]],
                               rtol=1e-5)
    # the IoU is the real one of the box with its matched ground truth
    iou = np.diag(box_iou_matrix(res["boxes"], res["gt_boxes"]))
    np.testing.assert_allclose(res["iou"], iou, rtol=1e-5)
    assert np.all(res["iou"] >= 0.1)
    # edge top-1 is the largest softmax probability of each edge's 17 bins
    assert res["reg_logits"].shape == (n, 4, 17)
    z = res["reg_logits"] - res["reg_logits"].max(-1, keepdims=True)
    expected = (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).max(-1)
    np.testing.assert_allclose(res["edge_top1"], expected, rtol=1e-5)
    # the boxes are the distributions' expectations times the stride around the point, clipped
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    dist = (p @ np.arange(17)) * res["strides"][:, None]
    decoded = np.concatenate([res["points"] - dist[:, :2], res["points"] + dist[:, 2:]], axis=1)
    np.testing.assert_allclose(res["boxes"], np.clip(decoded, 0, 64), atol=1e-3)
    assert set(np.unique(res["image_ids"])) <= set(dataset.image_ids[:2])
