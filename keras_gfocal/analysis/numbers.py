"""The numbers of the quality analysis, in NumPy: correlation and matching.

* ``pearson`` / ``pearson_or_none``: the correlation coefficient;
* ``box_iou_matrix``, ``match_detections``: each detection's best same-class
  ground truth and its IoU;
* ``correlations``: Pearson r of the real IoU with each of ``SIGNALS``.
"""

import numpy as np

#: Names of the signals whose correlation with the IoU is measured.
SIGNALS = ("dgqp_quality", "cls_score", "joint_score", "edge_top1_mean")


def pearson(x, y):
    """Pearson correlation coefficient of two equally long sequences.

    Pairs where either value is NaN or infinite are left out.

    Returns:
        float in ``[-1, 1]``; NaN when one of the two has no variance (the
        correlation is undefined).
    Raises:
        ValueError: different lengths, or fewer than 2 finite pairs.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"pearson needs two sequences of the same length, got {x.size} and {y.size}.")
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size < 2:
        raise ValueError(f"pearson needs at least 2 finite pairs, got {x.size}.")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.sum(dx * dy) / denom, -1.0, 1.0))


def pearson_or_none(x, y):
    """``pearson``, or None when it is undefined (fewer than 2 points, no variance)."""
    try:
        r = pearson(x, y)
    except ValueError:
        return None
    return None if np.isnan(r) else r


def box_iou_matrix(boxes1, boxes2):
    """IoU of every xyxy box of ``boxes1 [N, 4]`` with every box of ``boxes2 [M, 4]`` (NumPy), ``[N, M]``."""
    a = np.asarray(boxes1, np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-6)


def match_detections(det_boxes, det_labels, gt_boxes, gt_labels, iou_floor=0.1):
    """Matches each detection to the ground truth of its class with the highest IoU.

    Ground-truth rows with a negative label (padding) are ignored. Several
    detections may match the same ground truth.

    Args:
        det_boxes: ``[N, 4]`` xyxy; det_labels: ``[N]`` contiguous labels.
        gt_boxes: ``[G, 4]`` xyxy, same pixels; gt_labels: ``[G]`` (-1 padding).
        iou_floor: smallest IoU for a match (a match also needs IoU > 0).
    Returns:
        ``(gt_index [N] int, iou [N] float)``: the index into ``gt_boxes`` of the
        matched box (-1 when no same-class box reaches ``iou_floor``) and the
        best same-class IoU (0 when the image has no box of that class).
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_labels = np.asarray(det_labels).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    n = len(det_boxes)
    if n == 0 or len(gt_boxes) == 0:
        return np.full(n, -1, np.int64), np.zeros(n, np.float64)
    iou = box_iou_matrix(det_boxes, gt_boxes)
    same_class = (det_labels[:, None] == gt_labels[None, :]) & (gt_labels[None, :] >= 0)
    iou = np.where(same_class, iou, -1.0)
    best = np.argmax(iou, axis=1)
    best_iou = np.maximum(iou[np.arange(n), best], 0.0)
    matched = (best_iou >= iou_floor) & (best_iou > 0.0)
    return np.where(matched, best, -1).astype(np.int64), best_iou


def correlations(results):
    """Pearson r of the IoU with each signal of ``collect_positive_predictions``' results.

    Returns:
        ``{"dgqp_quality", "cls_score", "joint_score", "edge_top1_mean"}`` ->
        float, or None where undefined (no DGQP, fewer than 2 positives, a
        constant signal).
    """
    iou = results["iou"]
    quality = results.get("quality")
    return {
        "dgqp_quality": None if quality is None else pearson_or_none(iou, quality),
        "cls_score": pearson_or_none(iou, results["cls_score"]),
        "joint_score": pearson_or_none(iou, results["joint_score"]),
        "edge_top1_mean": pearson_or_none(iou, np.mean(results["edge_top1"], axis=-1)),
    }
