"""keras_gfocal.analysis.collect: every collected value against the model's layers, recomputed in NumPy."""

import keras
import numpy as np

from keras_gfocal import GFocalDetector
from keras_gfocal.analysis.numbers import box_iou_matrix
from keras_gfocal.data import make_synthetic_coco


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
    from keras_gfocal.analysis.collect import collect_positive_predictions
    from keras_gfocal.data import CocoDataset, make_dataset

    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=1, num_val=3, image_size=(64, 64))
    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, image_size=(64, 64))
    dataset = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    res = collect_positive_predictions(model, dataset, batch_size=2, max_images=2, score_threshold=0.0)
    n = len(res["iou"])
    assert res["num_images"] == 2 and n > 0

    # Independent values at each positive's point: the same two images through the model's layers.
    images, _, meta = next(
        iter(make_dataset(dataset.records(skip_empty=False).take(2), training=False, batch_size=2, image_size=(64, 64)))
    )
    row_of_image = {int(i): r for r, i in enumerate(np.asarray(meta["image_id"]))}
    rows = np.array([row_of_image[int(i)] for i in res["image_ids"]])
    # point index from the recorded point: level offset + row-major cell (levels of 8x8, 4x4, 2x2, 1x1, 1x1)
    offsets = {8: 0, 16: 64, 32: 80, 64: 84, 128: 85}
    xs, ys = res["points"][:, 0], res["points"][:, 1]
    side = {8: 8, 16: 4, 32: 2, 64: 1, 128: 1}
    index = np.array(
        [offsets[int(s)] + int(y // s) * side[int(s)] + int(x // s) for (x, y), s in zip(res["points"], res["strides"])]
    )
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
    np.testing.assert_allclose(res["joint_score"], np.asarray(out["cls_scores"])[rows, index, res["labels"]], rtol=1e-5)
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
