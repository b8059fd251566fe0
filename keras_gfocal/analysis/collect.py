"""Running a model over a labelled dataset: its positive detections, each with
the real IoU and every signal that could predict it (see ``keras_gfocal.analysis``)."""

import os

import numpy as np

from keras_gfocal.analysis.numbers import match_detections
from keras_gfocal.distributions import edge_confidence_np


def load_model(model):
    """``(model, name)``: a ``GFocalDetector`` given as itself or as a ``.keras`` path, and its name or path."""
    from keras_gfocal.export.runtime import load_keras_model

    if not isinstance(model, (str, os.PathLike)):
        return model, getattr(model, "name", "model")
    path = os.fspath(model)
    if not path.endswith(".keras"):
        raise ValueError(f"The analysis needs a Keras model file (.keras) with its raw outputs, got {path!r}.")
    return load_keras_model(path), path


def collect_positive_predictions(
    model, dataset, image_size=None, batch_size=8, max_images=None, iou_floor=0.1, score_threshold=None
):
    """Runs ``model`` over a dataset and returns its positive detections.

    A positive detection (see the module docstring) is a final detection whose
    box has IoU >= ``iou_floor`` with a ground-truth box of the detected class;
    it is matched to the same-class box of highest IoU.

    Args:
        model: a ``GFocalDetector`` (V2 or V1).
        dataset: a ``keras_gfocal.data.CocoDataset``.
        image_size: ``(H, W)`` resize canvas; default as ``gfocal evaluate``
            (``keras_gfocal.data.input_resize.input_resize``): the model's
            training canvas, else -- a converted model -- the reference's
            test resize, so the analysed detections are the evaluated ones.
        batch_size: images per forward pass.
        max_images: use only the first N images of the dataset.
        iou_floor: smallest IoU of a positive (0.1).
        score_threshold: detection threshold; default the model's (0.05).
    Returns:
        dict of NumPy arrays, one row per positive (``N`` of them):
        ``iou`` [N] the real IoU with the matched ground truth; ``quality`` [N]
        the DGQP output at the detection's point (None for a GFocalV1 model);
        ``cls_score`` [N] the classification probability of the detected class
        alone (``joint / quality`` for V2; the score itself for V1);
        ``joint_score`` [N] the detection score; ``edge_top1`` [N, 4] the top-1
        probability of each edge distribution (l, t, r, b); ``labels`` [N];
        ``boxes``, ``gt_boxes`` [N, 4] xyxy canvas pixels; ``points`` [N, 2]
        and ``strides`` [N] of the prior point; ``reg_logits`` [N, 4, reg_max
        + 1]; ``image_ids`` [N]; ``scales`` [N] (canvas / original pixels).
        Also the scalars ``dgqp``, ``reg_max``, ``num_images``,
        ``num_detections`` (all final detections), ``iou_floor``,
        ``score_threshold``, ``image_size`` and ``test_scale`` (the resize
        used: one of them is None).
    """
    from keras_gfocal.data import make_dataset
    from keras_gfocal.data.input_resize import input_resize

    if not hasattr(model, "decode") or not hasattr(model, "points"):
        raise TypeError(f"collect_positive_predictions needs a GFocalDetector, got {type(model).__name__}.")
    resize = input_resize(model, image_size)
    threshold = model.score_threshold if score_threshold is None else float(score_threshold)
    reg_max = int(model.reg_max)
    num_bins = reg_max + 1
    source = dataset if max_images is None else dataset.records(skip_empty=False).take(int(max_images))
    batches = make_dataset(source, training=False, batch_size=batch_size, **resize.dataset_options())

    rows = {
        k: []
        for k in (
            "iou",
            "quality",
            "cls_score",
            "joint_score",
            "edge_top1",
            "labels",
            "boxes",
            "gt_boxes",
            "points",
            "strides",
            "reg_logits",
            "image_ids",
            "scales",
        )
    }
    num_images = num_detections = 0
    for images, targets, meta in batches:
        outputs = model(images, training=False)
        h, w = int(images.shape[1]), int(images.shape[2])
        points, point_strides, _ = model.points(h, w)
        # The model's own decoding, each detection with the point it comes from.
        det = model.decode(images, outputs, score_threshold=threshold, return_point_indices=True)
        det = {k: np.asarray(v) for k, v in det.items()}
        reg_np = np.asarray(outputs["reg_logits"], np.float32)
        batch = int(reg_np.shape[0])
        points_np, strides_np = np.asarray(points), np.asarray(point_strides)
        gt_boxes_all, gt_labels_all = np.asarray(targets["boxes"]), np.asarray(targets["labels"])
        image_ids, scales = np.asarray(meta["image_id"]), np.asarray(meta["scale"])
        # Clipped to the resized image, not the padded canvas: the boxes ``gfocal evaluate`` scores.
        resized_hw = np.asarray(meta["original_size"], np.float32) * scales[:, None]
        det["boxes"] = np.minimum(det["boxes"], np.tile(resized_hw[:, ::-1], 2)[:, None, :])
        num_images += batch
        for i in range(batch):
            n = int(det["num_detections"][i])
            num_detections += n
            if n == 0:
                continue
            det_labels = det["labels"][i, :n]
            gt_index, iou = match_detections(
                det["boxes"][i, :n], det_labels, gt_boxes_all[i], gt_labels_all[i], iou_floor
            )
            keep = gt_index >= 0
            if not np.any(keep):
                continue
            point = det["point_indices"][i, :n][keep]
            joint = det["scores"][i, :n][keep]
            if model.dgqp:
                quality = np.asarray(model.localization_quality(reg_np[i, point]), np.float32)[:, 0]
                cls_alone = joint / np.maximum(quality, 1e-12)
                rows["quality"].append(quality)
            else:
                cls_alone = joint
            rows["iou"].append(iou[keep])
            rows["cls_score"].append(cls_alone)
            rows["joint_score"].append(joint)
            # float64, from the same logits as the float32 ``edge_confidence`` of the detections
            rows["edge_top1"].append(edge_confidence_np(reg_np[i, point], reg_max))
            rows["labels"].append(det_labels[keep])
            rows["boxes"].append(det["boxes"][i, :n][keep])
            rows["gt_boxes"].append(gt_boxes_all[i][gt_index[keep]])
            rows["points"].append(points_np[point])
            rows["strides"].append(strides_np[point])
            rows["reg_logits"].append(reg_np[i, point].reshape(-1, 4, num_bins))
            rows["image_ids"].append(np.full(len(point), image_ids[i], np.int64))
            rows["scales"].append(np.full(len(point), scales[i], np.float32))

    empty_shapes = {
        "edge_top1": (0, 4),
        "boxes": (0, 4),
        "gt_boxes": (0, 4),
        "points": (0, 2),
        "reg_logits": (0, 4, num_bins),
    }
    result = {}
    for key, parts in rows.items():
        if key == "quality" and not model.dgqp:
            result[key] = None
        elif parts:
            result[key] = np.concatenate(parts, axis=0)
        else:
            result[key] = np.zeros(empty_shapes.get(key, (0,)), np.float32)
    result.update(
        dgqp=bool(model.dgqp),
        reg_max=reg_max,
        num_images=num_images,
        num_detections=num_detections,
        iou_floor=float(iou_floor),
        score_threshold=threshold,
        image_size=resize.image_size,
        test_scale=resize.test_scale,
    )
    return result
