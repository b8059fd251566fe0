"""Independent NumPy reference implementations of the GFocalV2 formulas.

Written from /work/shared/REFERENCE.md (and the fixed public API description),
deliberately simple: explicit loops where that makes the formula obvious, float64
arithmetic throughout.  The tests compare the package (``keras_gfocal``) against these
functions; nothing here imports the package.
"""

from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

EPS = 1e-6  # the eps used in IoU / GIoU denominators (mmdet bbox_overlaps style)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def bce_prob(p, y):
    """torch.nn.functional.binary_cross_entropy: log terms clamped at -100."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_1mp = np.maximum(np.log(1.0 - p), -100.0)
    return -(y * log_p + (1.0 - y) * log_1mp)


def bce_logits(x, y):
    """Numerically stable sigmoid binary cross-entropy on logits."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.maximum(x, 0.0) - x * y + np.log1p(np.exp(-np.abs(x)))


def quality_focal_loss(pred, labels, scores, beta=2.0, from_logits=False):
    """QFL summed over classes -> [N].

    Every (row, class) element is a negative, BCE(p, 0) * p**beta, except the
    positive's true class, BCE(p, y) * |y - p|**beta.  A label outside [0, C) is
    background.
    """
    pred = np.asarray(pred, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n, c = pred.shape
    out = np.zeros(n, dtype=np.float64)
    for i in range(n):
        for k in range(c):
            x = pred[i, k]
            p = sigmoid(x) if from_logits else x
            positive = 0 <= labels[i] < c and labels[i] == k
            y = scores[i] if positive else 0.0
            bce = bce_logits(x, y) if from_logits else bce_prob(p, y)
            out[i] += bce * abs(y - p) ** beta
    return out


def distribution_focal_loss(logits, target):
    """DFL -> [N]: CE at floor(t) weighted by (floor(t)+1-t) plus CE at floor(t)+1 by (t-floor(t))."""
    logits = np.asarray(logits, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    logp = log_softmax(logits, axis=-1)
    out = np.zeros(logits.shape[0], dtype=np.float64)
    for i, t in enumerate(target):
        left = int(math.floor(t))
        right = left + 1
        w_left = right - t
        w_right = t - left
        loss = -logp[i, left] * w_left
        if w_right != 0.0:
            loss += -logp[i, right] * w_right
        out[i] = loss
    return out


def aligned_iou(a, b, eps=EPS):
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(a.shape[0], dtype=np.float64)
    for i in range(a.shape[0]):
        out[i] = _iou_one(a[i], b[i], eps)
    return out


def _area(box):
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _inter(a, b):
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    return w * h


def _iou_one(a, b, eps=EPS):
    inter = _inter(a, b)
    union = _area(a) + _area(b) - inter
    return inter / max(union, eps)


def _giou_one(a, b, eps=EPS):
    inter = _inter(a, b)
    union = max(_area(a) + _area(b) - inter, eps)
    iou = inter / union
    ew = max(max(a[2], b[2]) - min(a[0], b[0]), 0.0)
    eh = max(max(a[3], b[3]) - min(a[1], b[1]), 0.0)
    enclose = max(ew * eh, eps)
    return iou - (enclose - union) / enclose


def aligned_giou(a, b, eps=EPS):
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.array([_giou_one(a[i], b[i], eps) for i in range(a.shape[0])])


def giou_loss(pred_boxes, target_boxes):
    return 1.0 - aligned_giou(pred_boxes, target_boxes)


def pairwise_iou(boxes1, boxes2, eps=EPS):
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((b1.shape[0], b2.shape[0]), dtype=np.float64)
    for i in range(b1.shape[0]):
        for j in range(b2.shape[0]):
            out[i, j] = _iou_one(b1[i], b2[j], eps)
    return out


# ---------------------------------------------------------------------------
# Box coding and priors
# ---------------------------------------------------------------------------


def distance_to_box(points, distances):
    p = np.asarray(points, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    x, y = p[..., 0], p[..., 1]
    return np.stack([x - d[..., 0], y - d[..., 1], x + d[..., 2], y + d[..., 3]], axis=-1)


def box_to_distance(points, boxes, max_distance):
    p = np.asarray(points, dtype=np.float64)
    b = np.asarray(boxes, dtype=np.float64)
    x, y = p[..., 0], p[..., 1]
    d = np.stack([x - b[..., 0], y - b[..., 1], b[..., 2] - x, b[..., 3] - y], axis=-1)
    return np.clip(d, 0.0, max_distance)


def make_points(image_height, image_width, strides=(8, 16, 32, 64, 128)):
    pts, strd, counts = [], [], []
    for s in strides:
        fh = int(math.ceil(image_height / s))
        fw = int(math.ceil(image_width / s))
        for yy in range(fh):  # row-major: y outer, x inner
            for xx in range(fw):
                pts.append((xx * s, yy * s))  # no half-cell offset
                strd.append(s)
        counts.append(fh * fw)
    return np.array(pts, dtype=np.float64), np.array(strd, dtype=np.float64), counts


def points_to_anchors(points, point_strides, octave_base_scale=8):
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(point_strides, dtype=np.float64)
    half = octave_base_scale * s / 2.0
    return np.stack([p[:, 0] - half, p[:, 1] - half, p[:, 0] + half, p[:, 1] + half], axis=-1)


# ---------------------------------------------------------------------------
# ATSS
# ---------------------------------------------------------------------------


def atss_assign_single(anchors, num_level_anchors, gt_boxes, gt_valid, topk=9, return_margins=False, anchor_valid=None):
    """ATSS for one image -> int [A] (gt index or -1).

    With ``anchor_valid`` (bool [A]), the reference's way: the invalid anchors (over the
    image's padding) are removed, ATSS runs on the remaining ones with their per-level
    counts, and the result is put back with -1 on the removed anchors.
    """
    if anchor_valid is not None:
        anchor_valid = np.asarray(anchor_valid, dtype=bool)
        starts = np.concatenate([[0], np.cumsum(num_level_anchors)]).astype(int)
        kept_counts = [int(anchor_valid[starts[i] : starts[i + 1]].sum()) for i in range(len(num_level_anchors))]
        kept = np.nonzero(anchor_valid)[0]
        result = atss_assign_single(np.asarray(anchors)[kept], kept_counts, gt_boxes, gt_valid, topk, return_margins)
        sub, margins = result if return_margins else (result, None)
        assigned = np.full(anchor_valid.shape[0], -1, dtype=np.int64)
        assigned[kept] = sub
        return (assigned, margins) if return_margins else assigned
    return _atss_assign_kept(anchors, num_level_anchors, gt_boxes, gt_valid, topk, return_margins)


def _atss_assign_kept(anchors, num_level_anchors, gt_boxes, gt_valid, topk=9, return_margins=False):
    """ATSS for one image -> int [A] (gt index or -1).

    With return_margins=True also returns a dict of the smallest distances of every
    decision to its boundary, so that tests can reject randomly drawn cases whose
    outcome would depend on float rounding.
    """
    anchors = np.asarray(anchors, dtype=np.float64)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64)
    gt_valid = np.asarray(gt_valid, dtype=bool)
    num_anchors = anchors.shape[0]
    centres = np.stack([(anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0], axis=-1)
    starts = np.concatenate([[0], np.cumsum(num_level_anchors)]).astype(int)

    best_iou = np.full(num_anchors, -np.inf)
    assigned = np.full(num_anchors, -1, dtype=np.int64)
    margins = {"topk_gap": np.inf, "thr_gap": np.inf, "inside_gap": np.inf, "compete_gap": np.inf}
    positive_ious = [dict() for _ in range(num_anchors)]

    for g in range(gt_boxes.shape[0]):
        if not gt_valid[g]:
            continue
        box = gt_boxes[g]
        gc = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
        candidates = []
        for lvl in range(len(num_level_anchors)):
            lo, hi = starts[lvl], starts[lvl + 1]
            dist = np.sqrt(np.sum((centres[lo:hi] - gc) ** 2, axis=-1))
            k = min(topk, hi - lo)
            # stable sort: ties broken by the lower index
            order = np.argsort(dist, kind="stable")
            candidates.extend((lo + order[:k]).tolist())
            if k < hi - lo:
                margins["topk_gap"] = min(margins["topk_gap"], dist[order[k]] - dist[order[k - 1]])
        candidates = np.array(candidates, dtype=np.int64)
        ious = np.array([_iou_one(anchors[a], box) for a in candidates])
        thr = ious.mean() + ious.std(ddof=1)
        for a, iou in zip(candidates, ious):
            cx, cy = centres[a]
            dmin = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy)
            margins["inside_gap"] = min(margins["inside_gap"], abs(dmin - 0.01))
            if dmin > 0.01:
                margins["thr_gap"] = min(margins["thr_gap"], abs(iou - thr))
            if iou >= thr and dmin > 0.01:
                positive_ious[a][g] = iou
                if iou > best_iou[a]:  # strict: ties keep the lower gt index
                    best_iou[a] = iou
                    assigned[a] = g
    for a in range(num_anchors):
        vals = sorted(positive_ious[a].values(), reverse=True)
        if len(vals) > 1:
            margins["compete_gap"] = min(margins["compete_gap"], vals[0] - vals[1])
    if return_margins:
        return assigned, margins
    return assigned


def atss_assign(anchors, num_level_anchors, gt_boxes, gt_valid, topk=9, anchor_valid=None):
    """Batched ATSS; ``anchor_valid`` None (all valid) or bool [B, A]."""
    gt_boxes = np.asarray(gt_boxes)
    gt_valid = np.asarray(gt_valid)
    return np.stack(
        [
            atss_assign_single(
                anchors,
                num_level_anchors,
                gt_boxes[b],
                gt_valid[b],
                topk,
                anchor_valid=None if anchor_valid is None else np.asarray(anchor_valid)[b],
            )
            for b in range(gt_boxes.shape[0])
        ]
    )


def valid_points(image_height, image_width, image_size, strides=(8, 16, 32, 64, 128), size_divisor=32):
    """bool [A]: the points of an (H, W) canvas that lie over an image of resized size
    ``image_size = (h, w)``, as the reference flags valid priors from the image's own pad shape:
    pad (h, w) up to a multiple of 32 -> (Hp, Wp); on a level of stride s the cell (x, y) is
    valid when x < ceil(Wp / s) and y < ceil(Hp / s)."""
    h, w = image_size
    hp = int(math.ceil(h / size_divisor)) * size_divisor
    wp = int(math.ceil(w / size_divisor)) * size_divisor
    flags = []
    for s in strides:
        fh = int(math.ceil(image_height / s))
        fw = int(math.ceil(image_width / s))
        vh = min(int(math.ceil(hp / s)), fh)
        vw = min(int(math.ceil(wp / s)), fw)
        for yy in range(fh):  # row-major, as make_points
            for xx in range(fw):
                flags.append(xx < vw and yy < vh)
    return np.array(flags, dtype=bool)


# ---------------------------------------------------------------------------
# The training loss (REFERENCE.md "Targets and losses")
# ---------------------------------------------------------------------------


def gfocal_loss(
    cls_scores,
    reg_logits,
    gt_boxes,
    gt_labels,
    canvas_hw,
    image_sizes=None,
    cls_logits=None,
    strides=(8, 16, 32, 64, 128),
    reg_max=16,
    topk=9,
    beta=2.0,
    weights=(1.0, 2.0, 0.25),
    return_details=False,
):
    """The whole GFocal loss of one batch on one device, point by point.

    cls_scores [B, A, C] joint scores J; reg_logits [B, A, 4 (n+1)] edge-major; gt_boxes [B, G, 4]
    pixels; gt_labels [B, G] (-1 padding); image_sizes [B, 2] resized (h, w) or None (all points
    valid); cls_logits [B, A, C] for GFocalV1 (QFL on logits, J = sigmoid(logits)).

    Per valid point: QFL (beta) on J, target IoU(decoded box, g) for a positive's class. Per positive:
    w = max_c J; GIoU loss and DFL (sum over 4 edges / 4) in stride units, weighted by w, targets
    clipped to [0, n - 0.1]. Normalisers: QFL by max(sum_images max(n_img, 1), 1); GIoU and DFL by
    sum w. Returns {"qfl", "giou", "dfl"} times their weights (and, with return_details, the
    positives per image and the raw sums).
    """
    cls_scores = np.asarray(cls_scores, np.float64)
    reg_logits = np.asarray(reg_logits, np.float64)
    gt_boxes = np.asarray(gt_boxes, np.float64)
    gt_labels = np.asarray(gt_labels)
    bsz, num_points, _ = cls_scores.shape
    height, width = canvas_hw
    points, point_strides, counts = make_points(height, width, strides)
    anchors = points_to_anchors(points, point_strides)
    n1 = reg_max + 1
    qfl_sum = giou_sum = dfl_sum = w_sum = 0.0
    positives = []
    for b in range(bsz):
        if image_sizes is None:
            valid = np.ones(num_points, bool)
        else:
            valid = valid_points(height, width, tuple(image_sizes[b]), strides)
        assigned = atss_assign_single(anchors, counts, gt_boxes[b], gt_labels[b] >= 0, topk, anchor_valid=valid)
        n_img = 0
        for a in range(num_points):
            if not valid[a]:
                continue  # zero QFL weight, never positive
            joint = cls_scores[b, a] if cls_logits is None else sigmoid(np.asarray(cls_logits, np.float64)[b, a])
            pred_row = joint if cls_logits is None else np.asarray(cls_logits, np.float64)[b, a]
            label, score = -1, 0.0
            if assigned[a] >= 0:
                n_img += 1
                g = assigned[a]
                s = point_strides[a]
                centre = points[a] / s
                target = gt_boxes[b, g] / s
                logits = reg_logits[b, a].reshape(4, n1)
                expected = (softmax(logits, axis=-1) * np.arange(n1)).sum(axis=-1)
                pred_box = distance_to_box(centre, expected)
                label, score = int(gt_labels[b, g]), _iou_one(pred_box, target)
                w = float(np.max(joint))
                w_sum += w
                giou_sum += w * (1.0 - _giou_one(pred_box, target))
                edges = box_to_distance(centre, target, reg_max - 0.1)
                dfl_sum += w * float(np.sum(distribution_focal_loss(logits, edges))) / 4.0
            qfl_sum += quality_focal_loss(pred_row[None], [label], [score], beta, from_logits=cls_logits is not None)[0]
        positives.append(n_img)
    num_pos = max(sum(max(n, 1) for n in positives), 1)
    box_norm = w_sum if w_sum > 0 else 1.0
    out = {
        "qfl": weights[0] * qfl_sum / num_pos,
        "giou": weights[1] * giou_sum / box_norm,
        "dfl": weights[2] * dfl_sum / box_norm,
    }
    if return_details:
        out.update(positives=positives, qfl_sum=qfl_sum, weight_sum=w_sum)
    return out


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


def distribution_expectation(reg_logits, reg_max=16):
    x = np.asarray(reg_logits, dtype=np.float64)
    n1 = reg_max + 1
    x = x.reshape(x.shape[:-1] + (4, n1))  # edge-major
    p = softmax(x, axis=-1)
    return np.sum(p * np.arange(n1, dtype=np.float64), axis=-1)


def decode_boxes(points, point_strides, reg_logits, image_shape, reg_max=16):
    h, w = image_shape
    dist = distribution_expectation(reg_logits, reg_max) * np.asarray(point_strides, np.float64)[:, None]
    boxes = distance_to_box(np.asarray(points, np.float64)[None], dist)
    boxes[..., 0] = np.clip(boxes[..., 0], 0, w)
    boxes[..., 2] = np.clip(boxes[..., 2], 0, w)
    boxes[..., 1] = np.clip(boxes[..., 1], 0, h)
    boxes[..., 3] = np.clip(boxes[..., 3], 0, h)
    return boxes


def nms_single_class(boxes, scores, iou_threshold):
    """Greedy NMS: indices kept, best first; a box is suppressed if IoU > threshold."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if all(_iou_one(boxes[i], boxes[j]) <= iou_threshold for j in keep):
            keep.append(i)
    return keep


def postprocess_single(
    cls_scores,
    boxes,
    num_level_points,
    pre_nms_top_k=1000,
    score_threshold=0.05,
    iou_threshold=0.6,
    max_detections=100,
):
    """One image -> (boxes [K,4], scores [K], classes [K]) sorted by score descending."""
    cls_scores = np.asarray(cls_scores, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(num_level_points)]).astype(int)
    kept_points = []
    for lvl in range(len(num_level_points)):
        lo, hi = starts[lvl], starts[lvl + 1]
        max_scores = cls_scores[lo:hi].max(axis=-1)
        order = np.argsort(-max_scores, kind="stable")[:pre_nms_top_k]
        kept_points.extend((lo + order).tolist())
    det_boxes, det_scores, det_classes = [], [], []
    num_classes = cls_scores.shape[1]
    for c in range(num_classes):
        idx = [i for i in kept_points if cls_scores[i, c] > score_threshold]
        if not idx:
            continue
        b = boxes[idx]
        s = cls_scores[idx, c]
        for k in nms_single_class(b, s, iou_threshold):
            det_boxes.append(b[k])
            det_scores.append(s[k])
            det_classes.append(c)
    if not det_scores:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), dtype=np.int64)
    det_boxes = np.array(det_boxes)
    det_scores = np.array(det_scores)
    det_classes = np.array(det_classes)
    order = np.argsort(-det_scores, kind="stable")[:max_detections]
    return det_boxes[order], det_scores[order], det_classes[order]


def postprocess_detections(
    cls_scores, boxes, num_level_points, pre_nms_top_k=1000, score_threshold=0.05, iou_threshold=0.6, max_detections=100
):
    """Batched, padded like the package's API: dict of boxes/scores/classes/num_detections."""
    cls_scores = np.asarray(cls_scores)
    boxes = np.asarray(boxes)
    bsz = cls_scores.shape[0]
    out_boxes = np.zeros((bsz, max_detections, 4))
    out_scores = np.zeros((bsz, max_detections))
    out_classes = np.full((bsz, max_detections), -1, dtype=np.int64)
    num = np.zeros((bsz,), dtype=np.int64)
    for b in range(bsz):
        bb, ss, cc = postprocess_single(
            cls_scores[b], boxes[b], num_level_points, pre_nms_top_k, score_threshold, iou_threshold, max_detections
        )
        k = len(ss)
        out_boxes[b, :k] = bb
        out_scores[b, :k] = ss
        out_classes[b, :k] = cc
        num[b] = k
    return {"boxes": out_boxes, "scores": out_scores, "labels": out_classes, "num_detections": num}


# ---------------------------------------------------------------------------
# DGQP
# ---------------------------------------------------------------------------


def dgqp_features(reg_logits, reg_max=16, topk=4, add_mean=True):
    """Per edge: top-k softmax probabilities (descending), then their mean; edge-major concat."""
    x = np.asarray(reg_logits, dtype=np.float64)
    n1 = reg_max + 1
    x = x.reshape(x.shape[:-1] + (4, n1))
    p = softmax(x, axis=-1)
    top = -np.sort(-p, axis=-1)[..., :topk]  # [..., 4, k] descending
    if add_mean:
        top = np.concatenate([top, top.mean(axis=-1, keepdims=True)], axis=-1)
    return top.reshape(x.shape[:-2] + (-1,))


def dgqp(reg_logits, w1, b1, w2, b2, reg_max=16, topk=4, add_mean=True):
    f = dgqp_features(reg_logits, reg_max, topk, add_mean)
    h = np.maximum(f @ np.asarray(w1, np.float64) + np.asarray(b1, np.float64), 0.0)
    return sigmoid(h @ np.asarray(w2, np.float64) + np.asarray(b2, np.float64))


def conv2d_nhwc(x, kernel, stride=1, pad=0):
    """Cross-correlation (as Keras and torch compute it) of NHWC ``x`` with an HWIO kernel,
    symmetric zero padding ``pad``, in float64."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    h, w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            out[:, i, j] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def frozen_batch_norm(x, gamma, beta, mean, variance, epsilon=1e-5):
    """BatchNorm in inference mode (running statistics), in float64."""
    gamma, beta, mean, variance = (np.asarray(v, np.float64) for v in (gamma, beta, mean, variance))
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
