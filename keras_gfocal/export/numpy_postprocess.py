"""Decoding and class-wise NMS in NumPy, for the raw outputs of a ``--no-nms`` export.

An edge-GPU app runs the static-shape TFLite file, then this (or a port of it):

1. prior points: for each stride s of ``strides`` and each cell (i, j) of the
   ``ceil(Hp / s) x ceil(Wp / s)`` grid, the point ``(j * s, i * s)``, levels
   in order, rows first;
2. each edge's expected distance ``sum_k softmax(logits)_k * k`` times the
   stride; box = point -/+ distances, clipped to the canvas;
3. per level, the ``pre_nms_top_k`` points with the highest max-class score;
4. every (point, class) pair scoring above ``score_threshold``, by descending
   score, through NMS at ``iou_threshold`` within each class; the first
   ``max_detections`` kept.

Every setting comes from the export's metadata (``postprocessing``).
"""

import numpy as np

from keras_gfocal.distributions import edge_probabilities_np, expectation_np


def prior_points(canvas_size, strides):
    """``(points [A, 2] xy, point_strides [A], counts per level)`` for a canvas ``(Hp, Wp)``."""
    points, point_strides, counts = [], [], []
    for s in strides:
        h, w = -(-canvas_size[0] // s), -(-canvas_size[1] // s)
        ys, xs = np.meshgrid(np.arange(h) * s, np.arange(w) * s, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32))
        point_strides.append(np.full(h * w, s, np.float32))
        counts.append(h * w)
    return np.concatenate(points), np.concatenate(point_strides), counts


def decode(reg_logits, points, point_strides, canvas_size, reg_max=16):
    """``reg_logits [A, 4 (reg_max + 1)]`` -> ``(boxes [A, 4] xyxy, edge top-1 [A, 4])``."""
    probs = edge_probabilities_np(np.asarray(reg_logits).reshape(-1, 4 * (reg_max + 1)), reg_max)
    distances = expectation_np(probs) * point_strides[:, None]
    boxes = np.concatenate([points - distances[:, :2], points + distances[:, 2:]], axis=1)
    h, w = canvas_size
    return np.clip(boxes, 0, [w, h, w, h]).astype(np.float32), probs.max(axis=-1).astype(np.float32)


def _iou(box, boxes):
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def postprocess(cls_scores, reg_logits, metadata):
    """Raw outputs of one image -> detections in canvas pixels.

    Args:
        cls_scores: ``[A, C]`` (or ``[1, A, C]``) joint scores.
        reg_logits: ``[A, 4 (reg_max + 1)]`` (or with a batch axis of 1).
        metadata: the export's metadata dict (``metadata.read_metadata``).
    Returns:
        dict of ``boxes [n, 4]``, ``scores [n]``, ``labels [n]``,
        ``edge_confidence [n, 4]``, sorted by descending score.
    """
    post = metadata["postprocessing"]
    cls_scores = np.asarray(cls_scores, np.float32).reshape(-1, metadata["num_classes"])
    reg_logits = np.asarray(reg_logits, np.float32).reshape(cls_scores.shape[0], -1)
    canvas = metadata["canvas_size"]
    points, point_strides, counts = prior_points(canvas, post["strides"])
    if len(points) != len(cls_scores):
        raise ValueError(f"{len(cls_scores)} points in the outputs, {len(points)} expected for canvas {canvas}.")
    boxes, top1 = decode(reg_logits, points, point_strides, canvas, post["reg_max"])

    keep, start = [], 0
    for n in counts:
        level_max = cls_scores[start : start + n].max(axis=1)
        # Stable sort so that ties keep the lower index, like tf.math.top_k.
        keep.append(start + np.argsort(-level_max, kind="stable")[: post["pre_nms_top_k"]])
        start += n
    keep = np.concatenate(keep)
    scores = cls_scores[keep]
    pair_points, pair_labels = np.nonzero(scores > post["score_threshold"])
    pair_scores = scores[pair_points, pair_labels]
    order = np.argsort(-pair_scores, kind="stable")
    pair_points, pair_labels, pair_scores = pair_points[order], pair_labels[order], pair_scores[order]

    chosen = []
    suppressed = np.zeros(len(order), bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        chosen.append(i)
        if len(chosen) == post["max_detections"]:
            break
        rest = np.arange(i + 1, len(order))
        rest = rest[(pair_labels[rest] == pair_labels[i]) & ~suppressed[rest]]
        if len(rest):
            overlaps = _iou(boxes[keep[pair_points[i]]], boxes[keep[pair_points[rest]]])
            suppressed[rest[overlaps > post["iou_threshold"]]] = True
    chosen = np.asarray(chosen, np.int64)
    idx = keep[pair_points[chosen]]
    return {
        "boxes": boxes[idx].reshape(-1, 4),
        "scores": pair_scores[chosen].astype(np.float32),
        "labels": pair_labels[chosen].astype(np.int32),
        "edge_confidence": top1[idx].reshape(-1, 4),
    }
