"""GFocal losses: Quality Focal Loss, Distribution Focal Loss and GIoU loss.

Each function returns one loss value per row, unreduced; weighting and
normalisation (by the number of positives, or by the sum of the quality
weights) are the caller's job, see ``keras_gfocal.detection_loss``.
"""

from keras import ops

from keras_gfocal import boxes as box_ops

# torch's binary_cross_entropy clamps log(p) at -100; the reference relies on it
# for probabilities that reach exactly 0 or 1.
_LOG_CLAMP = -100.0


def _bce_probs(p, y):
    log_p = ops.maximum(ops.log(p), _LOG_CLAMP)
    log_1mp = ops.maximum(ops.log(1.0 - p), _LOG_CLAMP)
    return -(y * log_p + (1.0 - y) * log_1mp)


def _bce_logits(x, y):
    # Stable sigmoid cross entropy: max(x, 0) - x * y + log(1 + exp(-|x|)).
    return ops.relu(x) - x * y + ops.log1p(ops.exp(-ops.abs(x)))


def quality_focal_loss(pred, labels, scores, beta=2.0, from_logits=False):
    """Quality Focal Loss (QFL), summed over classes.

    Every class of every row is a negative, ``BCE(p, 0) * p**beta``, except the
    true class of a positive row, ``BCE(p, y) * |y - p|**beta`` with ``y`` the
    IoU target.

    Args:
        pred: ``[N, C]`` joint-score probabilities (GFLV2), or logits when
            ``from_logits=True`` (GFLV1).
        labels: int ``[N]``; a value in ``[0, C)`` marks a positive of that
            class, anything else (-1, C, ...) is background.
        scores: ``[N]`` IoU targets; read only on positive rows.
        beta: focusing exponent.
        from_logits: whether ``pred`` holds logits.
    Returns:
        ``[N]`` float32 loss per row.
    """
    pred = ops.cast(ops.convert_to_tensor(pred), "float32")
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    num_classes = ops.shape(pred)[-1]
    prob = ops.sigmoid(pred) if from_logits else pred
    bce = _bce_logits if from_logits else _bce_probs

    positive = ops.logical_and(labels >= 0, labels < num_classes)
    # one_hot of an out-of-range label is all zeros, so background rows get none.
    target_mask = ops.one_hot(ops.where(positive, labels, -1), num_classes, dtype="float32")
    target = target_mask * ops.expand_dims(scores, -1)
    focal = ops.power(ops.abs(target - prob), beta)
    # With target 0 off the true class this is BCE(p, 0) * p**beta.
    return ops.sum(bce(pred, target) * focal, axis=-1)


def distribution_focal_loss(logits, target):
    """Distribution Focal Loss (DFL).

    Cross entropy of the two bins around the continuous target, each weighted by
    its closeness: ``CE(l) * (r - t) + CE(r) * (t - l)`` with ``l = floor(t)``
    and ``r = l + 1``.

    Args:
        logits: ``[N, n + 1]`` unnormalised bin scores.
        target: ``[N]`` distances in bin units, in ``[0, n]``. The detector's
            targets stop at ``n - 0.1`` (REFERENCE.md); ``t = n`` is the last
            bin's cross entropy alone (the bin above has weight 0; its index is
            clamped to ``n``).
    Returns:
        ``[N]`` loss.
    """
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    target = ops.cast(ops.convert_to_tensor(target), "float32")
    num_bins = ops.shape(logits)[-1]
    left = ops.floor(target)
    weight_left = left + 1.0 - target
    weight_right = target - left
    log_probs = ops.log_softmax(logits, axis=-1)
    left_idx = ops.cast(left, "int32")
    # The right bin only carries weight when t is not on an integer; clamp its
    # index so t == n stays in range.
    right_idx = ops.minimum(left_idx + 1, num_bins - 1)
    ce_left = -ops.take_along_axis(log_probs, ops.expand_dims(left_idx, -1), axis=-1)[..., 0]
    ce_right = -ops.take_along_axis(log_probs, ops.expand_dims(right_idx, -1), axis=-1)[..., 0]
    return ce_left * weight_left + ce_right * weight_right


def giou_loss(pred_boxes, target_boxes):
    """``1 - GIoU`` of aligned xyxy box pairs ``[N, 4]`` -> ``[N]``."""
    return 1.0 - box_ops.aligned_giou(pred_boxes, target_boxes)
