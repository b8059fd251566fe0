"""Decoding of the distribution outputs and class-wise NMS.

Outputs have fixed, padded shapes with a count, so the same graph serves
``predict()``, SavedModel and TFLite exports. NMS uses only TensorFlow ops that
TFLite has as built-ins (top-k, gather, NonMaxSuppressionV5).

The detections have one vocabulary, ``DETECTION_KEYS`` (``DETECTIONS`` says what
each means, and every export's metadata carries it), in every way a model
runs: ``GFocalDetector.predict``, the SavedModel, TFLite and ONNX exports, and
``keras_gfocal.export.load_detector(path).detect(image)`` (which drops the
batch axis, the padding and ``num_detections``):

* ``boxes`` float32 ``[B, D, 4]``: xyxy, in input (or image) pixels;
* ``scores`` float32 ``[B, D]``: the joint score that ranked NMS;
* ``labels`` int32 ``[B, D]``: the contiguous 0-based class index, the
  position in ``class_names``; -1 on padding;
* ``category_ids`` int32 ``[B, D]``: the dataset's category id of that class
  (``model.category_ids``; the label itself where the model has none); -1 on
  padding;
* ``num_detections`` int32 ``[B]``: how many rows of each image are real;
* ``edge_confidence`` float32 ``[B, D, 4]``: the top-1 probability of each
  edge's distribution (l, t, r, b), a per-edge localisation confidence.

On request (``return_point_indices``, off by default, so no export carries it)
``postprocess_detections`` and ``GFocalDetector.decode`` add ``point_indices``
int32 ``[B, D]``: each detection's point, its flat index over all levels in the
head's output order; -1 on padding.

The distributions' decoding (``distribution_expectation``, ``edge_confidence``)
lives in ``keras_gfocal.distributions``; this module re-exports both.
"""

import tensorflow as tf
from keras import ops

from keras_gfocal import boxes as box_ops

# Re-exported: the decoding of a distribution is part of what this module offers.
from keras_gfocal.distributions import distribution_expectation, edge_confidence  # noqa: F401

#: Each detection output's meaning, in the words the export metadata carries.
DETECTIONS = {
    "boxes": "xyxy box in pixels (of the input, the original image or the canvas), [B, D, 4] float32",
    "scores": "joint score that ranked NMS, [B, D] float32",
    "labels": "contiguous 0-based class index, the position in class_names; -1 on padding; [B, D] int32",
    "category_ids": "the dataset's category id of the label (category_ids); -1 on padding; [B, D] int32",
    "num_detections": "how many rows of each image are real, [B] int32",
    "edge_confidence": "top-1 probability of each edge's distribution (l, t, r, b), [B, D, 4] float32",
}
DETECTION_KEYS = tuple(DETECTIONS)


def decode_boxes(points, point_strides, reg_logits, image_shape, reg_max=16):
    """Decodes distribution logits into xyxy pixel boxes, clipped to the image.

    Args:
        points: ``[A, 2]`` prior points (x, y) in pixels.
        point_strides: ``[A]`` stride of each point.
        reg_logits: ``[B, A, 4 * (reg_max + 1)]``.
        image_shape: ``(H, W)`` of the model input.
    Returns:
        ``[B, A, 4]`` xyxy boxes in input pixels.
    """
    reg_logits = ops.cast(ops.convert_to_tensor(reg_logits), "float32")
    distances = distribution_expectation(reg_logits, reg_max)
    distances = distances * ops.cast(point_strides, "float32")[None, :, None]
    boxes = box_ops.distance_to_box(ops.cast(points, "float32")[None], distances)
    h, w = ops.cast(image_shape[0], "float32"), ops.cast(image_shape[1], "float32")
    limits = ops.stack([w, h, w, h])
    return ops.minimum(ops.maximum(boxes, 0.0), limits)


def _select_candidates(cls_scores, boxes, num_level_points, pre_nms_top_k):
    """Per level, the ``pre_nms_top_k`` points with the highest max-class score."""
    kept_scores, kept_boxes = [], []
    start = 0
    for n in num_level_points:
        level_scores = cls_scores[:, start : start + n]
        level_boxes = boxes[:, start : start + n]
        if not isinstance(n, int):
            # A dynamic level size (inputs of varying height and width): the
            # same selection, decided in the graph.
            def top(scores=level_scores, n=n):
                return tf.math.top_k(tf.reduce_max(scores, axis=-1), k=tf.minimum(pre_nms_top_k, n))[1]

            def every(scores=level_scores, n=n):
                return tf.broadcast_to(tf.range(n)[None], tf.shape(scores)[:2])

            idx = tf.cond(n > pre_nms_top_k, top, every)
            level_scores = tf.gather(level_scores, idx, batch_dims=1)
            level_boxes = tf.gather(level_boxes, idx, batch_dims=1)
        elif min(pre_nms_top_k, n) < n:
            _, idx = tf.math.top_k(tf.reduce_max(level_scores, axis=-1), k=pre_nms_top_k)
            level_scores = tf.gather(level_scores, idx, batch_dims=1)
            level_boxes = tf.gather(level_boxes, idx, batch_dims=1)
        kept_scores.append(level_scores)
        kept_boxes.append(level_boxes)
        start += n
    return tf.concat(kept_scores, axis=1), tf.concat(kept_boxes, axis=1)


def _nms_single_image(scores, payload, score_threshold, iou_threshold, max_detections):
    """Class-wise NMS of one image. scores ``[N, C]``, payload ``[N, 4 + K]``
    (the box, then K per-point values carried along)."""
    num_classes = tf.shape(scores)[1]
    flat_scores = tf.reshape(scores, [-1])
    top_scores, top_idx = tf.math.top_k(flat_scores, k=tf.shape(flat_scores)[0])
    point_idx = top_idx // num_classes
    labels = top_idx % num_classes
    cand_payload = tf.gather(payload, point_idx)
    cand_boxes = cand_payload[:, :4]
    # Shift each class to its own region so one NMS pass never lets two classes
    # suppress each other (class-wise NMS).
    offset = tf.cast(labels, tf.float32)[:, None] * (tf.reduce_max(payload[:, :4]) + 1.0)
    # The reference keeps scores strictly above the threshold.
    valid_scores = tf.where(top_scores > score_threshold, top_scores, tf.zeros_like(top_scores))
    selected, _, count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=cand_boxes + offset,
        scores=valid_scores,
        max_output_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=tf.constant(score_threshold, tf.float32),
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    valid = tf.range(max_detections) < count
    out_payload = tf.where(valid[:, None], tf.gather(cand_payload, selected), 0.0)
    out_scores = tf.where(valid, tf.gather(top_scores, selected), 0.0)
    out_labels = tf.where(valid, tf.gather(labels, selected), -1)
    return out_payload, out_scores, tf.cast(out_labels, tf.int32), count


def postprocess_detections(
    cls_scores,
    boxes,
    num_level_points,
    pre_nms_top_k=1000,
    score_threshold=0.05,
    iou_threshold=0.6,
    max_detections=100,
    point_features=None,
    return_point_indices=False,
):
    """Turns dense joint scores and decoded boxes into final detections.

    Per level the ``pre_nms_top_k`` points with the highest max-class score are
    kept; (point, class) pairs scoring above ``score_threshold`` go through
    class-wise NMS at ``iou_threshold``; the best ``max_detections`` remain.
    As in the reference, nothing else limits what enters NMS.

    Args:
        cls_scores: ``[B, A, C]`` joint-score probabilities.
        boxes: ``[B, A, 4]`` xyxy boxes.
        num_level_points: python ints, points per level.
        point_features: optional ``[B, A, K]`` per-point values (e.g. the
            ``edge_confidence``) returned for each detection.
        return_point_indices: also return each detection's point index.
    Returns:
        dict with ``boxes [B, D, 4]``, ``scores [B, D]``, ``labels`` int32
        ``[B, D]`` (contiguous class index, -1 on padding), ``num_detections``
        int32 ``[B]``, with ``D = max_detections``, sorted by descending score; and
        ``point_features [B, D, K]`` (zeros on padding) if given; and
        ``point_indices`` int32 ``[B, D]`` if ``return_point_indices``: the
        detection's row in ``cls_scores`` / ``boxes`` (the point's flat index
        over all levels), -1 on padding.
    """
    cls_scores = tf.cast(tf.convert_to_tensor(cls_scores), tf.float32)
    payload = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    if point_features is not None:
        payload = tf.concat([payload, tf.cast(point_features, tf.float32)], axis=-1)
    if return_point_indices:
        # Each point's row rides along as one more per-point value (float32 is
        # exact for row numbers below 2**24).
        shape = tf.shape(payload)
        rows = tf.broadcast_to(tf.range(shape[1], dtype=tf.float32)[None, :, None], [shape[0], shape[1], 1])
        payload = tf.concat([payload, rows], axis=-1)
    scores, cand_payload = _select_candidates(cls_scores, payload, num_level_points, pre_nms_top_k)
    width = payload.shape[-1]

    def per_image(args):
        return _nms_single_image(args[0], args[1], score_threshold, iou_threshold, max_detections)

    if cls_scores.shape[0] == 1:
        # A static batch of one (TFLite, ONNX): no loop in the graph.
        out = [t[None] for t in per_image((scores[0], cand_payload[0]))]
    else:
        out = tf.map_fn(
            per_image,
            (scores, cand_payload),
            fn_output_signature=(
                tf.TensorSpec([max_detections, width], tf.float32),
                tf.TensorSpec([max_detections], tf.float32),
                tf.TensorSpec([max_detections], tf.int32),
                tf.TensorSpec([], tf.int32),
            ),
        )
    out_payload, out_scores, out_labels, counts = out
    if return_point_indices:
        rows, out_payload = tf.cast(tf.round(out_payload[..., -1]), tf.int32), out_payload[..., :-1]
    result = {
        "boxes": out_payload[..., :4],
        "scores": out_scores,
        "labels": out_labels,
        "num_detections": counts,
    }
    if point_features is not None:
        result["point_features"] = out_payload[..., 4:]
    if return_point_indices:
        result["point_indices"] = tf.where(out_labels >= 0, rows, -1)
    return result


def labels_to_category_ids(labels, category_ids):
    """The dataset's category id of each contiguous label; -1 (padding) stays -1.

    Args:
        labels: int ``[...]`` contiguous labels, -1 on padding.
        category_ids: the dataset id of each label (``model.category_ids``), or
            None, where the ids are the labels themselves.
    Returns:
        int32 ``[...]``.
    """
    labels = tf.cast(labels, tf.int32)
    if category_ids is None:
        return labels
    ids = tf.constant([int(c) for c in category_ids], tf.int32)
    return tf.where(labels >= 0, tf.gather(ids, tf.maximum(labels, 0)), -1)
