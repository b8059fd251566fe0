"""The GFocal training objective: ATSS targets and QFL + GIoU + DFL from dense outputs.

Given the detector's dense outputs for a batch and its padded ground truth,
``GFocalLoss`` builds the training targets with ATSS and returns the three
weighted loss terms with the reference's normalisers (see REFERENCE.md,
"Label assignment: ATSS" and "Targets and losses"):

* QFL on the joint score (GFocalV2) or on the classification logits
  (GFocalV1, sigmoid inside), summed over all valid points and classes and
  divided by the number of positives counted with a floor of 1 per image,
  averaged across replicas, then at least 1;
* GIoU and DFL on the positives only, in stride units, each positive weighted
  by the detached max-class joint score ``w``; normalised by ``sum w``
  averaged across replicas (DFL also by its 4 edges).

Points over an image's padding take no part: when the targets carry
``"image_size"`` (each image's resized ``(h, w)`` before padding), a point at
cell ``(x, y)`` of stride ``s`` is valid only when ``x < ceil(Wp / s)`` and
``y < ceil(Hp / s)``, ``(Hp, Wp)`` the image's own size rounded up to a
multiple of 32, as the reference flags valid priors from each image's pad
shape. Invalid points are no ATSS candidates, never positive, and their QFL
terms are not summed. Without ``"image_size"`` every point is valid.

This module depends on boxes, assigners, losses and postprocess only; the
model (``keras_gfocal.detector``) calls it from ``compute_loss``.
"""

import numpy as np
import tensorflow as tf

from keras_gfocal import boxes as box_ops
from keras_gfocal import losses
from keras_gfocal.assigners import atss_assign
from keras_gfocal.distributions import distribution_expectation

#: The reference pads every image to a multiple of this (its own ``pad_shape``).
SIZE_DIVISOR = 32


# ------------------------------------------------------------------ replicas


def replica_mean(value):
    """Mean of ``value`` over the replicas of the current tf.distribute strategy."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def scale_for_replicas(loss):
    """``loss / num_replicas`` inside a replica context with several replicas.

    Gradients are summed over replicas, so each replica contributes ``1/R``
    of a loss whose normalisers are already global (replica means).
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return loss
    return loss / tf.cast(ctx.num_replicas_in_sync, loss.dtype)


# ------------------------------------------------------------------- targets


def validate_targets(boxes, labels, num_classes, image_size=None):
    """Eager checks of padded ground truth; raises ValueError naming the problem.

    Args:
        boxes: ``[B, G, 4]`` xyxy pixels.
        labels: ``[B, G]`` ints, -1 on padding rows.
        num_classes: the model's class count.
        image_size: optional ``[B, 2]`` ints, each image's resized
            ``(height, width)`` before padding.
    """
    boxes = np.asarray(boxes)
    labels = np.asarray(labels)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"y['boxes'] must have shape [batch, max_boxes, 4] (xyxy pixels), got {boxes.shape}.")
    if labels.shape != boxes.shape[:2]:
        raise ValueError(f"y['labels'] must have shape {boxes.shape[:2]} to match y['boxes'], got {labels.shape}.")
    valid = labels >= 0
    if np.any(labels[valid] >= num_classes):
        bad = int(labels[valid].max())
        raise ValueError(
            f"y['labels'] holds label {bad}, but the model has num_classes={num_classes}; "
            "labels must be in [0, num_classes) with -1 for padding."
        )
    b = boxes[valid]
    finite = np.isfinite(b).all(axis=-1)
    if not finite.all():
        image, row = (int(v[0]) for v in np.nonzero(valid & ~np.isfinite(boxes).all(axis=-1)))
        raise ValueError(
            f"y['boxes'] holds {int((~finite).sum())} box(es) with a non-finite coordinate (NaN or infinity), "
            f"the first in image {image}, row {row}: {boxes[image, row].tolist()}. Boxes must be finite xyxy pixels."
        )
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        idx = int(np.argmax((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])))
        raise ValueError(
            f"y['boxes'] holds a box with x2 < x1 or y2 < y1: {b[idx].tolist()}. "
            "Boxes must be xyxy pixels (x1, y1, x2, y2), not xywh."
        )
    if image_size is not None:
        image_size = np.asarray(image_size)
        if image_size.shape != (boxes.shape[0], 2):
            raise ValueError(
                f"y['image_size'] must have shape [batch, 2] (each image's resized height, width before "
                f"padding), got {image_size.shape}."
            )
        if np.any(image_size < 1):
            raise ValueError(f"y['image_size'] holds a size below 1: {image_size.tolist()}.")


def graph_checks(gt_boxes, gt_labels, num_classes, image_size=None, canvas_hw=None):
    """In-graph versions of ``validate_targets`` for targets inside datasets.

    Returns a list of assert ops to make the loss depend on.
    """
    valid = gt_labels >= 0
    bad_label = tf.reduce_any(valid & (gt_labels >= num_classes))
    inverted = tf.reduce_any(valid & ((gt_boxes[..., 2] < gt_boxes[..., 0]) | (gt_boxes[..., 3] < gt_boxes[..., 1])))
    non_finite = tf.reduce_any(valid & tf.logical_not(tf.reduce_all(tf.math.is_finite(gt_boxes), axis=-1)))
    checks = [
        tf.debugging.Assert(
            tf.logical_not(non_finite),
            [
                "GFocalDetector: a ground-truth box has a non-finite coordinate (NaN or infinity); boxes must be "
                "finite xyxy pixels."
            ],
        ),
        tf.debugging.Assert(
            tf.logical_not(bad_label),
            [
                f"GFocalDetector: a label is >= num_classes={num_classes}; labels must be in "
                "[0, num_classes) with -1 for padding. Max label:",
                tf.reduce_max(gt_labels),
            ],
        ),
        tf.debugging.Assert(
            tf.logical_not(inverted),
            ["GFocalDetector: a ground-truth box has x2 < x1 or y2 < y1; boxes must be xyxy pixels."],
        ),
    ]
    if image_size is not None and canvas_hw is not None:
        canvas = tf.cast(tf.stack([canvas_hw[0], canvas_hw[1]]), image_size.dtype)
        fits = tf.reduce_all((image_size >= 1) & (image_size <= canvas[None]))
        checks.append(
            tf.debugging.Assert(
                fits,
                [
                    "GFocalDetector: y['image_size'] must hold each image's resized (height, width) before "
                    "padding, between 1 and the input size. Got:",
                    image_size,
                    "input (height, width):",
                    canvas,
                ],
                summarize=8,
            )
        )
    return checks


def valid_point_mask(points, point_strides, image_size, size_divisor=SIZE_DIVISOR):
    """Which points lie over each image's own padded area.

    Args:
        points: ``[A, 2]`` (x, y) pixels, at ``(col * s, row * s)``.
        point_strides: ``[A]`` stride ``s`` of each point.
        image_size: int ``[B, 2]``, each image's resized ``(h, w)`` before padding.
        size_divisor: the image's own size is rounded up to a multiple of this.
    Returns:
        bool ``[B, A]``: ``col < ceil(Wp / s)`` and ``row < ceil(Hp / s)``.
    """
    size = tf.cast(image_size, tf.int32)
    padded = (size + size_divisor - 1) // size_divisor * size_divisor  # [B, 2] (Hp, Wp)
    padded_xy = tf.reverse(padded, axis=[-1])  # [B, 2] (Wp, Hp)
    strides = tf.cast(tf.round(point_strides), tf.int32)  # [A]
    cells = tf.cast(tf.round(points / point_strides[:, None]), tf.int32)  # [A, 2] (col, row)
    limits = (padded_xy[:, None, :] + strides[None, :, None] - 1) // strides[None, :, None]  # [B, A, 2]
    return tf.reduce_all(cells[None] < limits, axis=-1)


class GFocalLoss:
    """The GFocal training loss with the reference's settings.

    Args:
        num_classes: number of object classes ``C``.
        strides: pyramid strides of the dense outputs (8, 16, 32, 64, 128).
        reg_max: largest distribution bin ``n`` (16).
        atss_topk: ATSS candidates per level (9).
        qfl_beta: QFL focusing exponent (2).
        qfl_weight, giou_weight, dfl_weight: term weights (1.0, 2.0, 0.25).
    """

    def __init__(
        self,
        num_classes,
        strides=box_ops.DEFAULT_STRIDES,
        reg_max=16,
        atss_topk=9,
        qfl_beta=2.0,
        qfl_weight=1.0,
        giou_weight=2.0,
        dfl_weight=0.25,
    ):
        self.num_classes = int(num_classes)
        self.strides = tuple(int(s) for s in strides)
        self.reg_max = int(reg_max)
        self.atss_topk = int(atss_topk)
        self.qfl_beta = float(qfl_beta)
        self.qfl_weight = float(qfl_weight)
        self.giou_weight = float(giou_weight)
        self.dfl_weight = float(dfl_weight)

    def assign(self, targets, image_hw):
        """ATSS targets for every point of an ``(H, W)`` input.

        Args:
            targets: dict with ``"boxes"`` ``[B, G, 4]`` xyxy input pixels,
                ``"labels"`` int ``[B, G]`` (-1 on padding rows) and optionally
                ``"image_size"`` int ``[B, 2]`` (resized ``(h, w)`` before padding).
            image_hw: ``(H, W)`` of the input batch, python ints.
        Returns:
            dict: ``points [A, 2]``, ``point_strides [A]``, ``valid`` bool
            ``[B, A]`` (points over each image's own padded area),
            ``positive`` bool ``[B, A]``, ``labels`` int32 ``[B, A]`` (the class,
            or ``C`` for background), ``boxes`` ``[B, A, 4]`` the assigned
            ground truth in input pixels (meaningless on negatives).
        """
        gt_boxes = tf.cast(targets["boxes"], tf.float32)
        gt_labels = tf.cast(targets["labels"], tf.int32)
        image_size = targets.get("image_size") if hasattr(targets, "get") else None
        if image_size is not None:
            image_size = tf.cast(image_size, tf.int32)
        h, w = image_hw
        with tf.control_dependencies(graph_checks(gt_boxes, gt_labels, self.num_classes, image_size, (h, w))):
            gt_valid = tf.identity(gt_labels >= 0)

        points, point_strides, counts = box_ops.make_points(h, w, self.strides)
        if image_size is None:
            valid = None
        else:
            valid = valid_point_mask(points, point_strides, image_size)
        anchors = box_ops.points_to_anchors(points, point_strides)
        assigned = atss_assign(anchors, counts, gt_boxes, gt_valid, topk=self.atss_topk, anchor_valid=valid)
        positive = assigned >= 0
        idx = tf.maximum(assigned, 0)
        if valid is None:
            valid = tf.ones_like(positive)
        return {
            "points": points,
            "point_strides": point_strides,
            "valid": valid,
            "positive": positive,
            "labels": tf.where(positive, tf.gather(gt_labels, idx, batch_dims=1), self.num_classes),
            "boxes": tf.gather(gt_boxes, idx, batch_dims=1),
        }

    def __call__(self, outputs, targets, image_hw):
        """The three weighted loss terms of one (per-replica) batch.

        Args:
            outputs: the detector's dense outputs, all points of all levels
                concatenated P3 first: ``"cls_scores"`` ``[B, A, C]`` joint
                scores (probabilities), ``"reg_logits"`` ``[B, A, 4 * (n + 1)]``
                edge-major; GFocalV1 outputs also carry ``"cls_logits"``
                ``[B, A, C]``, which QFL then takes (sigmoid inside).
            targets: see ``assign``.
            image_hw: ``(H, W)`` of the input batch, python ints.
        Returns:
            dict of float32 scalars ``"qfl"``, ``"giou"``, ``"dfl"``, each
            already multiplied by its weight.
        """
        t = self.assign(targets, image_hw)
        positive, valid = t["positive"], t["valid"]
        pos_f = tf.cast(positive, tf.float32)
        cls_scores = tf.cast(outputs["cls_scores"], tf.float32)
        reg_logits = tf.cast(outputs["reg_logits"], tf.float32)
        num_bins = self.reg_max + 1

        # Everything below in stride units, as the reference computes the box losses.
        point_strides = t["point_strides"]
        stride = point_strides[None, :, None]
        centers = (t["points"] / point_strides[:, None])[None]  # [1, A, 2]
        pred_dist = distribution_expectation(reg_logits, self.reg_max)
        pred_boxes = box_ops.distance_to_box(centers, pred_dist)  # [B, A, 4]
        target_boxes = t["boxes"] / stride
        iou_targets = box_ops.aligned_iou(tf.stop_gradient(pred_boxes), target_boxes)
        iou_targets = tf.where(positive, iou_targets, 0.0)

        flat = lambda v: tf.reshape(v, [-1] + v.shape[2:].as_list())  # noqa: E731
        from_logits = "cls_logits" in outputs
        cls_for_qfl = tf.cast(outputs["cls_logits"] if from_logits else cls_scores, tf.float32)
        qfl = losses.quality_focal_loss(
            flat(cls_for_qfl),
            flat(t["labels"]),
            flat(iou_targets),
            beta=self.qfl_beta,
            from_logits=from_logits,
        )
        qfl = qfl * flat(tf.cast(valid, tf.float32))
        # Positives per image with a floor of 1, summed, averaged over replicas, at least 1.
        per_image = tf.maximum(tf.reduce_sum(pos_f, axis=1), 1.0)
        num_pos = tf.maximum(replica_mean(tf.reduce_sum(per_image)), 1.0)
        loss_qfl = tf.reduce_sum(qfl) / num_pos

        weights = tf.stop_gradient(tf.reduce_max(cls_scores, axis=-1)) * pos_f  # [B, A]
        weight_sum = replica_mean(tf.reduce_sum(weights))
        safe_sum = tf.where(weight_sum > 0.0, weight_sum, 1.0)
        giou = losses.giou_loss(flat(pred_boxes), flat(target_boxes))
        loss_giou = tf.reduce_sum(giou * flat(weights)) / safe_sum
        target_dist = box_ops.box_to_distance(centers, target_boxes, self.reg_max - 0.1)  # [B, A, 4]
        dfl = losses.distribution_focal_loss(tf.reshape(reg_logits, [-1, num_bins]), tf.reshape(target_dist, [-1]))
        dfl_weights = tf.repeat(tf.reshape(weights, [-1]), 4)
        loss_dfl = tf.reduce_sum(dfl * dfl_weights) / 4.0 / safe_sum

        return {
            "qfl": self.qfl_weight * loss_qfl,
            "giou": self.giou_weight * loss_giou,
            "dfl": self.dfl_weight * loss_dfl,
        }
