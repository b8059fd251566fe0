"""Images in and out of the model's colour space: decoding, reading, normalising.

One decoder and one normalisation serve training (``keras_gfocal.data``),
evaluation, prediction and every export (``keras_gfocal.export``), so every path
sees the same pixels and the same model input. This module imports nothing else
of the package, so that exporting does not depend on the COCO reader.

* ``decode_image``: encoded JPEG / PNG / GIF / BMP bytes -> uint8 ``[h, w, 3]`` RGB.
* ``read_image``: the same for a file, as NumPy, with errors that name the file.
* ``normalize_image``: 0..255 RGB -> ``(image - MEAN) / STD`` float32, the
  backbone's input.
"""

import re

import tensorflow as tf

#: Per-channel RGB mean of ImageNet in 0..255 units, as in the reference.
MEAN = (123.675, 116.28, 103.53)
#: Per-channel RGB standard deviation of ImageNet in 0..255 units.
STD = (58.395, 57.12, 57.375)


def normalize_image(image):
    """Normalises RGB pixels: ``(image - MEAN) / STD``, computed in float32.

    Args:
        image: ``[..., 3]`` tensor with 0..255 values (any real or integer dtype).
    Returns:
        float32 tensor of the same shape.
    """
    image = tf.cast(image, tf.float32)
    return (image - tf.constant(MEAN, tf.float32)) / tf.constant(STD, tf.float32)


def decode_image(image_bytes):
    """Decodes JPEG / PNG / GIF / BMP bytes into uint8 ``[h, w, 3]`` RGB.

    Grayscale is repeated to three channels and an alpha channel is dropped;
    16-bit PNGs are scaled to 8 bits (value / 257); a GIF gives its first frame.
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_error_message(err):
    """The useful part of a decoding error: no TF function-node prefix, no op suffix."""
    text = getattr(err, "message", None) or str(err)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\]", "", text)
    text = re.sub(r"\s*name:\s*$", "", " ".join(text.split()))
    return text or type(err).__name__


def read_image(path):
    """Reads one image file as uint8 ``[h, w, 3]`` RGB NumPy, exactly as training decodes it.

    The same ``decode_image`` serves ``keras_gfocal.data.make_dataset``,
    evaluation, ``gfocal predict`` and the exports, so every path sees the same
    pixels: 16-bit PNGs are scaled to 8 bits (value / 257), grayscale is
    repeated to three channels, palette PNGs are expanded, CMYK JPEGs are
    converted to RGB and an alpha channel is dropped. EXIF orientation is
    ignored everywhere: pixels stay in the order they are stored, the order
    COCO boxes and ``height`` / ``width`` refer to.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded (the message names the file).
    """
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Image not found: {path}")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
        return decode_image(tf.constant(data)).numpy()
    except (tf.errors.OpError, ValueError) as err:
        raise ValueError(f"Cannot decode image {path}: {decode_error_message(err)}") from None
