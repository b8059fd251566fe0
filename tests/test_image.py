"""keras_gfocal.image: one decoder and one normalisation for every path."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_gfocal import image


def _png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_normalize_known_pixel():
    pixel = tf.constant([[[255, 0, 128]]], tf.uint8)
    out = image.normalize_image(pixel).numpy()[0, 0]
    # The reference's ImageNet statistics in 0..255 units, written out independently.
    expected = [(255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (128 - 103.53) / 57.375]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert image.MEAN == (123.675, 116.28, 103.53) and image.STD == (58.395, 57.12, 57.375)
    assert image.normalize_image(tf.constant([[list(image.MEAN)]], tf.float32)).numpy().tolist() == [[[0, 0, 0]]]


def test_decode_image_gives_three_channels_from_gray_and_rgba():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = image.decode_image(tf.constant(_png(gray))).numpy()
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7  # the alpha channel is dropped, not blended
    np.testing.assert_array_equal(image.decode_image(tf.constant(_png(rgba, "RGBA"))).numpy()[..., 0], 200)


def test_read_image_reads_what_decode_image_decodes(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    path = tmp_path / "a.png"
    path.write_bytes(_png(pixels))
    np.testing.assert_array_equal(image.read_image(path), pixels)


def test_read_image_names_the_file_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        image.read_image(tmp_path / "gone.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    with pytest.raises(ValueError, match=r"Cannot decode image .*bad.jpg") as info:
        image.read_image(bad)
    assert "function_node" not in str(info.value) and "[Op:" not in str(info.value)
