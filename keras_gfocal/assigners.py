"""ATSS label assignment (Adaptive Training Sample Selection), batched in the graph.

The assignment runs inside ``train_step``: images are a batch dimension and
ground truth is padded to a fixed count ``G`` with a validity mask, so there is
no Python loop over images or boxes (only over the static pyramid levels).
"""

import tensorflow as tf

from keras_gfocal import boxes as box_ops

# An anchor centre must lie this far inside a box (in pixels) on all four sides.
_INSIDE_MARGIN = 0.01


def atss_assign(anchors, num_level_anchors, gt_boxes, gt_valid, topk=9, anchor_valid=None):
    """Assigns each anchor to one ground-truth box or to background.

    For every box: per level the ``min(topk, n_l)`` anchors whose centres are
    nearest to the box centre become candidates; the IoU threshold is the mean
    plus the (Bessel-corrected) standard deviation of the candidates' IoUs; a
    candidate is positive if its IoU reaches the threshold and its centre lies
    inside the box. An anchor positive for several boxes takes the one it
    overlaps most.

    Ties. Two anchors at exactly the same distance from a box's centre can
    compete for its last candidate place on a level (integer box corners make
    this common): here the one with the lower index (the earlier point in
    row-major order) is kept. The reference's ``torch.topk`` defines no order
    among ties, and on the CPU it keeps the lower index for some level sizes
    and the higher for others (seen with torch 2.14 at 20, 64, 320, 1280 and
    5000 anchors: higher, lower, higher, higher, lower), so no fixed rule
    matches it everywhere; one positive can differ. An anchor positive for
    two boxes with exactly equal IoUs goes to the box listed first, as
    ``torch.max`` documents for the reference's choice.

    Anchors flagged invalid by ``anchor_valid`` (those over an image's
    padding) take no part: per level only the valid ones are ranked
    (``n_l`` counts the valid anchors of the level), the IoU statistics are
    taken over valid candidates only, and they are never positive -- the
    same as running ATSS on the valid anchors alone.

    Args:
        anchors: ``[A, 4]`` xyxy anchors of all levels, level by level.
        num_level_anchors: python ints, anchors per level, summing to ``A``.
        gt_boxes: ``[B, G, 4]`` xyxy ground truth, padded.
        gt_valid: bool ``[B, G]``, False on padding rows.
        topk: candidates per level.
        anchor_valid: optional bool ``[B, A]``; None: every anchor is valid.
    Returns:
        int32 ``[B, A]``: index of the assigned box in ``[0, G)``, or -1.
    """
    anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
    gt_boxes = tf.cast(tf.convert_to_tensor(gt_boxes), tf.float32)
    gt_valid = tf.cast(tf.convert_to_tensor(gt_valid), tf.bool)
    num_level_anchors = [int(n) for n in num_level_anchors]
    # One always-invalid padding box keeps every reduction over boxes non-empty,
    # so a batch without any box slot (G == 0) assigns everything to background.
    gt_boxes = tf.pad(gt_boxes, [[0, 0], [0, 1], [0, 0]])
    gt_valid = tf.pad(gt_valid, [[0, 0], [0, 1]], constant_values=False)
    batch = tf.shape(gt_boxes)[0]
    num_gt = tf.shape(gt_boxes)[1]
    num_anchors = tf.shape(anchors)[0]

    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2.0  # [A, 2]
    gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # [B, G, 2]
    diff = gt_centers[:, :, None, :] - anchor_centers[None, None, :, :]
    distances = tf.sqrt(tf.reduce_sum(diff * diff, axis=-1))  # [B, G, A]
    if anchor_valid is not None:
        anchor_valid = tf.cast(tf.convert_to_tensor(anchor_valid), tf.bool)  # [B, A]
        # Invalid anchors rank last on every level; the ones that still fill a
        # level's k slots (fewer valid anchors than k) are masked out below.
        distances = tf.where(anchor_valid[:, None, :], distances, float("inf"))
    ious = box_ops.pairwise_iou(gt_boxes, anchors[None])  # [B, G, A]

    # Candidates: nearest anchors per level. top_k on negated distances keeps
    # the lower index among ties, as a stable sort would.
    candidates = []
    start = 0
    for n in num_level_anchors:
        k = min(topk, n)
        _, idx = tf.math.top_k(-distances[..., start : start + n], k=k, sorted=True)
        candidates.append(idx + start)
        start += n
    candidates = tf.concat(candidates, axis=-1)  # [B, G, K]
    num_candidates = candidates.shape[-1]

    cand_ious = tf.gather(ious, candidates, batch_dims=2)  # [B, G, K]
    if anchor_valid is None:
        cand_valid = None
        mean = tf.reduce_mean(cand_ious, axis=-1, keepdims=True)
        # Bessel's correction, as torch's std: a single candidate's std is NaN (0 / 0), so that
        # the comparison with the threshold fails and, as in the reference, it is not positive.
        var = tf.reduce_sum(tf.square(cand_ious - mean), axis=-1, keepdims=True) / (num_candidates - 1.0)
    else:
        b_of = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(candidates))
        cand_valid = tf.gather_nd(anchor_valid, tf.stack([b_of, candidates], axis=-1))  # [B, G, K]
        weight = tf.cast(cand_valid, tf.float32)
        count = tf.reduce_sum(weight, axis=-1, keepdims=True)
        mean = tf.reduce_sum(cand_ious * weight, axis=-1, keepdims=True) / tf.maximum(count, 1.0)
        # Bessel's correction, as torch's std: one valid candidate gives 0 / 0 = NaN (never
        # positive, as in the reference); none gives 0 / -1 (and no valid candidate to be positive).
        var = tf.reduce_sum(tf.square(cand_ious - mean) * weight, axis=-1, keepdims=True) / (count - 1.0)
    threshold = mean + tf.sqrt(var)

    cand_centers = tf.gather(anchor_centers, candidates)  # [B, G, K, 2]
    box = gt_boxes[:, :, None, :]
    edge_distances = tf.stack(
        [
            cand_centers[..., 0] - box[..., 0],
            cand_centers[..., 1] - box[..., 1],
            box[..., 2] - cand_centers[..., 0],
            box[..., 3] - cand_centers[..., 1],
        ],
        axis=-1,
    )
    inside = tf.reduce_min(edge_distances, axis=-1) > _INSIDE_MARGIN
    positive = (cand_ious >= threshold) & inside & gt_valid[:, :, None]  # [B, G, K]
    if cand_valid is not None:
        positive = positive & cand_valid

    # Scatter the candidates' verdicts back onto all anchors: [B, G, A].
    b_idx = tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(candidates))
    g_idx = tf.broadcast_to(tf.range(num_gt)[None, :, None], tf.shape(candidates))
    scatter_idx = tf.stack([b_idx, g_idx, candidates], axis=-1)
    positive_mask = (
        tf.scatter_nd(scatter_idx, tf.cast(positive, tf.float32), tf.stack([batch, num_gt, num_anchors])) > 0.0
    )

    masked = tf.where(positive_mask, ious, -1.0)  # IoUs are >= 0, so -1 marks "not positive"
    best = tf.argmax(masked, axis=1, output_type=tf.int32)  # first max wins ties
    has_positive = tf.reduce_max(masked, axis=1) > -1.0
    return tf.where(has_positive, best, -1)
