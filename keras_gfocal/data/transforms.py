"""Image and box transforms for detection input pipelines.

Every function here is a pure TensorFlow function on a single image, safe to call
inside ``tf.data.Dataset.map`` (graph mode) as well as eagerly. Boxes travel with the
image: they are ``float32 [N, 4]`` in ``(x1, y1, x2, y2)`` pixel coordinates, with the
convention of the reference (MMDetection): a box covering the whole image of width
``W`` is ``(0, 0, W, H)``, and a horizontal flip maps ``x -> W - x``.

The order used for training and evaluation follows the reference recipe:

1. ``resize_keep_ratio`` (into a ``random_short_side_target`` canvas for multi-scale
   training),
2. ``random_horizontal_flip`` (training only),
3. ``keras_gfocal.image.normalize_image`` with its ``MEAN`` / ``STD`` (RGB, 0..255 input),
4. ``pad_to_size`` with zeros at the bottom and right, to a fixed canvas of
   ``padded_size(image_size, 32)``, so every batch has one static shape.

Resizing rule. ``image_size = (H, W)`` is the canvas the resized image must fit in;
the scale factor is ``min(H / h, W / w)`` for an image of height ``h`` and width ``w``,
and the new size is ``(floor(h * scale + 0.5), floor(w * scale + 0.5))``. For a
landscape canvas such as ``(800, 1333)`` and a landscape image this is exactly
MMDetection's keep-ratio ``Resize(img_scale=(1333, 800))``, i.e.
``min(800 / short_side, 1333 / long_side)``. Portrait images are fitted into the
same landscape canvas (so they come out smaller than in the reference, where the
canvas follows the image's orientation); this is the price of one static batch
shape. Pass a square ``image_size`` if that matters for your data.

Test-time resize of the reference (``test_scale``, evaluation and prediction of a
model without a training canvas): per image, keep the ratio with the long side at
most 1333 and the short side at most 800, ``scale = min(1333 / long, 800 / short)``,
so a portrait image stays portrait, and pad to the image's own size rounded up to a
multiple of 32 (``resize_for_test``, ``pad_up_to_multiple``), not to a larger
canvas: the network's convolution borders and the head's GroupNorm statistics see
the padding, so a larger canvas changes the outputs.

Boxes are scaled by the single factor ``scale`` (not separately by the rounded
``new_w / w`` and ``new_h / h`` as the reference does; the difference is below half a
pixel), so predictions map back to original pixels exactly by dividing by ``scale``.
"""

import tensorflow as tf

from keras_gfocal.constants import REFERENCE_IMAGE_SIZE as REFERENCE_IMAGE_SIZE  # re-exported
from keras_gfocal.constants import REFERENCE_TEST_SCALE
from keras_gfocal.image import normalize_image


def padded_size(image_size, pad_to_multiple=32):
    """Rounds ``image_size`` up to a multiple of ``pad_to_multiple``.

    Args:
        image_size: ``(H, W)`` python ints, the resize canvas.
        pad_to_multiple: python int >= 1.

    Returns:
        ``(Hp, Wp)`` python ints with ``Hp >= H``, ``Wp >= W``, both multiples of
        ``pad_to_multiple``.
    """
    height, width = (int(v) for v in image_size)
    m = int(pad_to_multiple)
    if m < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}.")
    return (-(-height // m) * m, -(-width // m) * m)


def compute_resize_scale(image_shape, target_size):
    """Keep-ratio scale factor and new size that fits an image into a canvas.

    Args:
        image_shape: int tensor ``[2]`` (or sequence), the image ``(h, w)``.
        target_size: int tensor ``[2]`` (or sequence), the canvas ``(H, W)``.

    Returns:
        ``(scale, new_size)``: ``scale`` float32 scalar ``min(H / h, W / w)``;
        ``new_size`` int32 ``[2]``, ``(floor(h * scale + 0.5), floor(w * scale + 0.5))``
        clamped to ``[1, H] x [1, W]``.
    """
    hw = tf.cast(image_shape, tf.float32)
    target = tf.cast(target_size, tf.float32)
    scale = tf.reduce_min(target / hw)
    new_size = tf.floor(hw * scale + 0.5)
    new_size = tf.clip_by_value(new_size, 1.0, target)
    return scale, tf.cast(new_size, tf.int32)


def resize_keep_ratio(image, boxes, target_size):
    """Resizes an image keeping its aspect ratio to fit into ``target_size``.

    Bilinear interpolation without antialiasing (as OpenCV's ``INTER_LINEAR`` used by
    the reference). Boxes are multiplied by ``scale`` and clipped to the new image.

    Args:
        image: ``[h, w, 3]`` tensor, any real or integer dtype (0..255 values).
        boxes: float32 ``[N, 4]`` xyxy pixel boxes in the input image.
        target_size: int ``[2]`` canvas ``(H, W)`` (python sequence or tensor).

    Returns:
        ``(image, boxes, scale)``: float32 ``[h', w', 3]`` with ``h' <= H``, ``w' <= W``;
        float32 ``[N, 4]`` boxes in the resized image; float32 scalar ``scale``.
    """
    image = tf.convert_to_tensor(image)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scale, new_size = compute_resize_scale(tf.shape(image)[:2], target_size)
    resized = tf.image.resize(tf.cast(image, tf.float32), new_size, method="bilinear", antialias=False)
    new_hw = tf.cast(new_size, tf.float32)
    boxes = clip_boxes(boxes * scale, new_hw)
    return resized, boxes, scale


def oriented_canvas(image_shape, test_scale=REFERENCE_TEST_SCALE):
    """The keep-ratio canvas of the reference's test-time resize for one image.

    Args:
        image_shape: int ``[2]`` tensor (or sequence), the image ``(h, w)``.
        test_scale: ``(short, long)`` limits, e.g. ``(800, 1333)``.

    Returns:
        int32 ``[2]`` canvas ``(H, W)``: ``(short, long)`` for a landscape or square
        image, ``(long, short)`` for a portrait one, so that ``min(H / h, W / w)`` is
        ``min(long / long_side, short / short_side)``.
    """
    short, long = (int(v) for v in test_scale)
    if not 1 <= short <= long:
        raise ValueError(f"test_scale must be (short, long) with 1 <= short <= long, got {tuple(test_scale)}.")
    hw = tf.cast(image_shape, tf.int32)
    return tf.where(hw[0] <= hw[1], tf.constant([short, long], tf.int32), tf.constant([long, short], tf.int32))


def reference_test_size(image_shape, test_scale=REFERENCE_TEST_SCALE, pad_to_multiple=32):
    """Sizes of the reference's test-time resize of one image.

    Args:
        image_shape: int ``[2]`` tensor (or sequence), the image ``(h, w)``.
        test_scale: ``(short, long)`` limits.
        pad_to_multiple: the resized image is padded up to a multiple of this.

    Returns:
        ``(scale, new_size, padded)``: float32 scalar
        ``min(long / long_side, short / short_side)``; int32 ``[2]`` resized
        ``(floor(h * scale + 0.5), floor(w * scale + 0.5))``; int32 ``[2]`` that size
        rounded up to a multiple of ``pad_to_multiple``.
    """
    scale, new_size = compute_resize_scale(image_shape, oriented_canvas(image_shape, test_scale))
    m = int(pad_to_multiple)
    return scale, new_size, (new_size + m - 1) // m * m


def resize_for_test(image, boxes, test_scale=REFERENCE_TEST_SCALE):
    """``resize_keep_ratio`` into the image's own ``oriented_canvas``.

    Returns:
        ``(image, boxes, scale)`` as ``resize_keep_ratio``.
    """
    image = tf.convert_to_tensor(image)
    return resize_keep_ratio(image, boxes, oriented_canvas(tf.shape(image)[:2], test_scale))


def pad_up_to_multiple(image, multiple=32):
    """Pads an image with zeros at the bottom and right to its own size rounded
    up to a multiple of ``multiple`` (a dynamic shape).

    Args:
        image: ``[h, w, C]`` tensor.
        multiple: python int >= 1.

    Returns:
        ``[ceil(h / m) * m, ceil(w / m) * m, C]`` tensor.
    """
    m = int(multiple)
    shape = tf.shape(image)
    pad_h = (shape[0] + m - 1) // m * m - shape[0]
    pad_w = (shape[1] + m - 1) // m * m - shape[1]
    return tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])


def random_short_side_target(image_size, short_range, seed):
    """Draws a multi-scale resize canvas for one image.

    The shorter dimension of ``image_size`` is replaced by an integer drawn
    uniformly from ``[min_short, max_short]`` (inclusive, as the reference's
    ``multiscale_mode="range"``); the longer dimension stays, so the long side of the
    resized image never exceeds it.

    Args:
        image_size: ``(H, W)`` python ints, the largest canvas.
        short_range: ``(min_short, max_short)`` python ints, ``max_short <= min(H, W)``.
        seed: int ``[2]`` tensor, a stateless random seed.

    Returns:
        int32 ``[2]`` canvas ``(H', W')``.
    """
    height, width = (int(v) for v in image_size)
    lo, hi = (int(v) for v in short_range)
    short = tf.random.stateless_uniform([], seed=seed, minval=lo, maxval=hi + 1, dtype=tf.int32)
    if height <= width:
        return tf.stack([short, tf.constant(width, tf.int32)])
    return tf.stack([tf.constant(height, tf.int32), short])


def horizontal_flip(image, boxes):
    """Flips an image and its boxes left to right.

    Args:
        image: ``[h, w, C]`` tensor.
        boxes: float32 ``[N, 4]`` xyxy boxes.

    Returns:
        ``(image, boxes)`` with ``x1' = w - x2``, ``x2' = w - x1``.
    """
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=-1)
    flipped = tf.stack([width - x2, y1, width - x1, y2], axis=-1)
    return tf.reverse(image, axis=[1]), flipped


def random_horizontal_flip(image, boxes, prob, seed):
    """Flips with probability ``prob`` using a stateless seed.

    Args:
        image: ``[h, w, C]`` tensor.
        boxes: float32 ``[N, 4]`` xyxy boxes.
        prob: python float in ``[0, 1]``.
        seed: int ``[2]`` tensor.

    Returns:
        ``(image, boxes, flipped)`` where ``flipped`` is a bool scalar.
    """
    if prob <= 0.0:
        return image, boxes, tf.constant(False)
    flipped = tf.random.stateless_uniform([], seed=seed) < prob
    image, boxes = tf.cond(
        flipped,
        lambda: horizontal_flip(image, boxes),
        lambda: (tf.identity(image), tf.identity(boxes)),
    )
    return image, boxes, flipped


def pad_to_size(image, size):
    """Pads an image with zeros at the bottom and right to exactly ``size``.

    Args:
        image: ``[h, w, C]`` tensor with ``h <= Hp``, ``w <= Wp``.
        size: ``(Hp, Wp)`` python ints.

    Returns:
        ``[Hp, Wp, C]`` tensor (static height and width).
    """
    hp, wp = (int(v) for v in size)
    shape = tf.shape(image)
    tf.debugging.assert_less_equal(shape[:2], tf.constant([hp, wp]), message="image larger than pad size")
    padded = tf.pad(image, [[0, hp - shape[0]], [0, wp - shape[1]], [0, 0]])
    padded.set_shape([hp, wp, image.shape[-1]])
    return padded


def clip_boxes(boxes, image_hw):
    """Clips xyxy boxes to ``[0, w] x [0, h]``.

    Args:
        boxes: float32 ``[N, 4]``.
        image_hw: float ``[2]``, ``(h, w)``.

    Returns:
        float32 ``[N, 4]``.
    """
    image_hw = tf.cast(image_hw, boxes.dtype)
    upper = tf.stack([image_hw[1], image_hw[0], image_hw[1], image_hw[0]])
    return tf.clip_by_value(boxes, tf.zeros_like(upper), upper)


def pad_boxes(boxes, labels, max_boxes):
    """Truncates / pads per-image targets to a fixed number of rows.

    Keeps the first ``max_boxes`` boxes. Padding rows have all-zero boxes and label
    ``-1``.

    Args:
        boxes: float32 ``[N, 4]``.
        labels: int32 ``[N]``.
        max_boxes: python int.

    Returns:
        ``(boxes, labels)``: float32 ``[max_boxes, 4]``, int32 ``[max_boxes]``.
    """
    boxes = boxes[:max_boxes]
    labels = tf.cast(labels[:max_boxes], tf.int32)
    num_pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, num_pad], [0, 0]])
    labels = tf.pad(labels, [[0, num_pad]], constant_values=-1)
    boxes.set_shape([max_boxes, 4])
    labels.set_shape([max_boxes])
    return boxes, labels


def preprocess_image(image, image_size=None, pad_to_multiple=32, test_scale=None):
    """Prepares one image for inference exactly as evaluation batches are prepared.

    Args:
        image: ``[h, w, 3]`` RGB image, uint8 or float with 0..255 values (numpy array
            or tensor).
        image_size: ``(H, W)`` resize canvas, e.g. ``(800, 1333)``; None with
            ``test_scale`` for the reference's per-image test resize.
        pad_to_multiple: the padded canvas is ``image_size`` (or, with
            ``test_scale``, the resized image's own size) rounded up to this.
        test_scale: ``(short, long)`` limits of the reference's test-time resize,
            e.g. ``REFERENCE_TEST_SCALE``; used when given (``image_size`` is then
            ignored).

    Returns:
        ``(image, scale)``: float32 ``[Hp, Wp, 3]`` normalised and zero-padded image,
        and float32 scalar ``scale`` (resized / original). Boxes predicted on the
        padded image map back to the original image by dividing by ``scale``.
    """
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(f"preprocess_image expects [h, w, 3], got shape {image.shape}.")
    empty = tf.zeros([0, 4], tf.float32)
    if test_scale is not None:
        resized, _, scale = resize_for_test(image, empty, test_scale)
        return pad_up_to_multiple(normalize_image(resized), pad_to_multiple), scale
    if image_size is None:
        raise ValueError("preprocess_image needs an image_size canvas or a test_scale.")
    resized, _, scale = resize_keep_ratio(image, empty, image_size)
    normalized = normalize_image(resized)
    return pad_to_size(normalized, padded_size(image_size, pad_to_multiple)), scale
