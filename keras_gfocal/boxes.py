"""Box operations: IoU, GIoU, point <-> distance conversions and prior points.

All boxes are ``xyxy`` (x1, y1, x2, y2) in pixels unless a docstring says
otherwise. Functions accept NumPy arrays or tensors and use ``keras.ops`` so
they run on any Keras backend.
"""

from keras import ops

# Denominator guard, the same value the reference uses for IoU and GIoU.
EPS = 1e-6

DEFAULT_STRIDES = (8, 16, 32, 64, 128)


def _as_float(x):
    x = ops.convert_to_tensor(x)
    if "float" not in str(x.dtype):
        x = ops.cast(x, "float32")
    return x


def box_area(boxes):
    """Area of ``[..., 4]`` boxes, ``[...]``; inverted boxes count as 0."""
    boxes = _as_float(boxes)
    w = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def pairwise_iou(boxes1, boxes2):
    """IoU of every box in ``boxes1 [..., N, 4]`` with every box in ``boxes2 [..., M, 4]``.

    Returns ``[..., N, M]``.
    """
    boxes1 = _as_float(boxes1)
    boxes2 = ops.cast(_as_float(boxes2), boxes1.dtype)
    a = ops.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b = ops.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    lt = ops.maximum(a[..., :2], b[..., :2])
    rb = ops.minimum(a[..., 2:], b[..., 2:])
    wh = ops.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = ops.expand_dims(box_area(boxes1), -1) + ops.expand_dims(box_area(boxes2), -2) - inter
    return inter / ops.maximum(union, EPS)


def _aligned_terms(boxes1, boxes2):
    boxes1 = _as_float(boxes1)
    boxes2 = ops.cast(_as_float(boxes2), boxes1.dtype)
    lt = ops.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = ops.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = ops.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = ops.maximum(box_area(boxes1) + box_area(boxes2) - inter, EPS)
    return boxes1, boxes2, inter, union


def aligned_iou(boxes1, boxes2):
    """IoU of matching pairs: ``[..., 4]`` and ``[..., 4]`` -> ``[...]``."""
    _, _, inter, union = _aligned_terms(boxes1, boxes2)
    return inter / union


def aligned_giou(boxes1, boxes2):
    """Generalised IoU of matching pairs: ``[..., 4]`` and ``[..., 4]`` -> ``[...]``.

    GIoU = IoU - (enclosing area - union) / enclosing area.
    """
    boxes1, boxes2, inter, union = _aligned_terms(boxes1, boxes2)
    iou = inter / union
    lt = ops.minimum(boxes1[..., :2], boxes2[..., :2])
    rb = ops.maximum(boxes1[..., 2:], boxes2[..., 2:])
    wh = ops.maximum(rb - lt, 0.0)
    enclose = ops.maximum(wh[..., 0] * wh[..., 1], EPS)
    return iou - (enclose - union) / enclose


def distance_to_box(points, distances):
    """Boxes from points and edge distances.

    Args:
        points: ``[..., 2]`` (x, y).
        distances: ``[..., 4]`` (left, top, right, bottom), same units as points.
    Returns:
        ``[..., 4]`` xyxy boxes ``(x - l, y - t, x + r, y + b)``.
    """
    points = _as_float(points)
    distances = ops.cast(_as_float(distances), points.dtype)
    x, y = points[..., 0], points[..., 1]
    return ops.stack(
        [x - distances[..., 0], y - distances[..., 1], x + distances[..., 2], y + distances[..., 3]],
        axis=-1,
    )


def box_to_distance(points, boxes, max_distance):
    """Edge distances from points to boxes, the inverse of ``distance_to_box``.

    Args:
        points: ``[..., 2]`` (x, y).
        boxes: ``[..., 4]`` xyxy.
        max_distance: upper clip; the GFL targets pass ``reg_max - 0.1`` so that
            the bin above ``floor(d)`` always exists.
    Returns:
        ``[..., 4]`` (x - x1, y - y1, x2 - x, y2 - y) clipped to ``[0, max_distance]``.
    """
    points = _as_float(points)
    boxes = ops.cast(_as_float(boxes), points.dtype)
    x, y = points[..., 0], points[..., 1]
    d = ops.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], axis=-1)
    return ops.clip(d, 0.0, max_distance)


def feature_map_sizes(image_height, image_width, strides=DEFAULT_STRIDES):
    """``[(h_l, w_l), ...]`` for each stride: ``ceil(size / s)``.

    A stride-2 3x3 conv with "same" padding halves a map rounding up, so for
    inputs padded to a multiple of 32 this is exactly the FPN's map sizes.
    Works on python ints and on scalar tensors (dynamic image sizes).
    """
    return [((image_height + s - 1) // s, (image_width + s - 1) // s) for s in strides]


def make_points(image_height, image_width, strides=DEFAULT_STRIDES):
    """Prior points of all levels.

    One point per feature-map cell at ``(x * s, y * s)`` (no half-cell offset,
    as in the reference), row-major within a level, levels in stride order.

    Args:
        image_height, image_width: python ints, or scalar tensors for
            dynamic sizes.
    Returns:
        ``(points [A, 2] float32 (x, y), point_strides [A] float32,
        num_level_points)``, the last a list of python ints for static sizes
        (tensors otherwise).
    """
    points, point_strides, counts = [], [], []
    for (h, w), s in zip(feature_map_sizes(image_height, image_width, strides), strides):
        xs = ops.cast(ops.arange(w), "float32") * s
        ys = ops.cast(ops.arange(h), "float32") * s
        grid_y, grid_x = ops.meshgrid(ys, xs, indexing="ij")
        points.append(ops.stack([ops.reshape(grid_x, (-1,)), ops.reshape(grid_y, (-1,))], axis=-1))
        point_strides.append(ops.full((h * w,), float(s), dtype="float32"))
        counts.append(h * w)
    return ops.concatenate(points, 0), ops.concatenate(point_strides, 0), counts


def points_to_anchors(points, point_strides, octave_base_scale=8):
    """Square ATSS anchors of side ``octave_base_scale * s`` centred on each point.

    Args:
        points: ``[A, 2]``; point_strides: ``[A]``.
    Returns:
        ``[A, 4]`` xyxy.
    """
    points = _as_float(points)
    half = ops.cast(_as_float(point_strides), points.dtype) * (octave_base_scale / 2.0)
    return ops.stack([points[:, 0] - half, points[:, 1] - half, points[:, 0] + half, points[:, 1] + half], axis=-1)
