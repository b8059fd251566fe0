"""The TensorFlow functions that exports trace: pre-processing, model, decoding.

Two input contracts:

* **end to end** (SavedModel): uint8 images of any size, or encoded JPEG/PNG
  bytes; the graph resizes (``keras_gfocal.data.input_resize``: into the model's
  canvas, or by the reference's test resize), normalises and pads, runs the model, decodes and
  NMSes, and returns boxes in each input image's own pixels with the dataset's
  category ids.
* **canvas** (TFLite, ONNX): float32 (or, for full-int8 TFLite, uint8) RGB
  pixels ``[B, Hp, Wp, 3]`` with 0..255 values, already resized keep-ratio into
  the model's canvas and padded bottom/right with the ImageNet mean colour
  (``canvas_from_image``); the graph normalises and runs the model, then either
  decodes and NMSes (boxes in canvas pixels) or returns the raw head outputs.
"""

import numpy as np
import tensorflow as tf

from keras_gfocal.data.transforms import padded_size, resize_keep_ratio
from keras_gfocal.image import MEAN, decode_image, normalize_image

POSTPROCESS_SCOPE = "gfocal_postprocess"


def canvas_from_image(image, image_size, dtype=np.float32):
    """Host-side pre-processing for the canvas contract (TFLite, ONNX).

    Args:
        image: uint8 ``[h, w, 3]`` RGB.
        image_size: ``(H, W)`` resize canvas of the export.
        dtype: ``np.float32``, or ``np.uint8`` for a full-int8 TFLite input.
    Returns:
        ``(canvas [Hp, Wp, 3] of dtype, scale)``; boxes predicted on the canvas
        map back to the image by dividing by ``scale``.
    """
    resized, _, scale = resize_keep_ratio(image, np.zeros([0, 4], np.float32), image_size)
    resized = resized.numpy()
    hp, wp = padded_size(image_size, 32)
    canvas = np.empty([hp, wp, 3], np.float32)
    canvas[...] = MEAN  # normalises to zero, like the training pipeline's padding
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    if dtype == np.uint8:
        canvas = np.clip(np.round(canvas), 0, 255)
    return canvas.astype(dtype), float(scale.numpy())


def detect_on_canvas(model, pixels, nms=True):
    """Canvas pixels ``[B, Hp, Wp, 3]`` -> detections in canvas pixels, or raw outputs.

    With ``nms``: the ``keras_gfocal.postprocess.DETECTION_KEYS`` (``labels``
    contiguous, ``category_ids`` the dataset's). Without: ``{"cls_scores":
    [B, A, C], "reg_logits": [B, A, 4 * (reg_max + 1)]}`` for
    ``numpy_postprocess.postprocess``.
    """
    images = normalize_image(pixels)
    outputs = model(images, training=False)
    if not nms:
        return {"cls_scores": outputs["cls_scores"], "reg_logits": outputs["reg_logits"]}
    # The scope names the ops that full-int8 TFLite keeps in float.
    with tf.name_scope(POSTPROCESS_SCOPE):
        return model.decode(images, outputs)


def detect_end_to_end(model, images, resize):
    """A batch of decoded images -> detections in each image's own pixels.

    Args:
        images: uint8 ``[B, h, w, 3]`` (one size per batch).
        resize: ``keras_gfocal.data.input_resize.InputResize``: a fixed canvas, or
            the reference's test resize (the batch's one size gives one canvas).
    Returns:
        dict of ``keras_gfocal.postprocess.DETECTION_KEYS``; boxes xyxy in
        input-image pixels.
    """
    shape = tf.shape(images)
    checks = [
        tf.debugging.assert_equal(
            shape[-1], 3, message="images must have 3 channels (RGB): convert grayscale or RGBA images first."
        ),
        tf.debugging.assert_positive(shape[0], message="Empty batch: send at least one image"),
    ]
    # The checks run before anything reads the images, so their message is the one a caller sees.
    with tf.control_dependencies(checks):
        images = tf.identity(images)
    canvases, scales = tf.map_fn(
        resize.preprocess,
        images,
        fn_output_signature=(tf.TensorSpec(_canvas_shape(resize), tf.float32), tf.TensorSpec([], tf.float32)),
    )
    original = tf.cast(tf.shape(images)[1:3], tf.float32)
    return _finish(model, canvases, scales, tf.tile(original[None], [tf.shape(images)[0], 1]))


def detect_encoded(model, image_bytes, resize):
    """Encoded JPEG/PNG/GIF/BMP strings ``[B]`` -> detections in each image's pixels.

    With the test resize, images of several sizes in one batch are padded
    bottom/right to the largest canvas among them (zeros after normalising).
    """
    check = tf.debugging.assert_positive(tf.size(image_bytes), message="Empty batch: send at least one image")
    with tf.control_dependencies([check]):
        image_bytes = tf.identity(image_bytes)
    bound = _canvas_bound(resize)

    def prepare(data):
        image = decode_image(data)
        canvas, scale = resize.preprocess(image)
        canvas_hw = tf.shape(canvas)[:2]
        canvas = tf.pad(canvas, [[0, bound[0] - canvas_hw[0]], [0, bound[1] - canvas_hw[1]], [0, 0]])
        return canvas, scale, tf.cast(tf.shape(image)[:2], tf.float32), canvas_hw

    canvases, scales, originals, canvas_sizes = tf.map_fn(
        prepare,
        image_bytes,
        fn_output_signature=(
            tf.TensorSpec([*bound, 3], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([2], tf.float32),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    if resize.canvas_size is None:
        largest = tf.reduce_max(canvas_sizes, axis=0)
        canvases = canvases[:, : largest[0], : largest[1]]
    return _finish(model, canvases, scales, originals)


def _canvas_shape(resize):
    """The static canvas shape ``[Hp, Wp, 3]``; height and width unknown for the test resize."""
    if resize.canvas_size is not None:
        return [*resize.canvas_size, 3]
    return [None, None, 3]


def _canvas_bound(resize):
    """``(Hp, Wp)`` no canvas of ``resize`` exceeds: the fixed canvas, or for the test
    resize a square of the long limit rounded up to 32 (either orientation fits)."""
    if resize.canvas_size is not None:
        return tuple(resize.canvas_size)
    return padded_size((resize.test_scale[1], resize.test_scale[1]), 32)


def _finish(model, canvases, scales, originals):
    """Model + decoding on normalised canvases; boxes back to original pixels."""
    detections = model.decode(canvases, model(canvases, training=False))
    boxes = detections["boxes"] / scales[:, None, None]
    h, w = originals[:, 0], originals[:, 1]
    limits = tf.stack([w, h, w, h], axis=-1)[:, None, :]
    valid = detections["labels"] >= 0
    detections["boxes"] = tf.where(valid[..., None], tf.minimum(boxes, limits), 0.0)
    return detections
