"""Transforms: hand-computed resize scales, flips, normalisation and padding."""

import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal.data import transforms


@pytest.mark.parametrize(
    "hw, expected_scale, expected_size",
    [
        # mmdet Resize(img_scale=(1333, 800), keep_ratio=True) on COCO-like shapes.
        ((480, 640), 800 / 480, (800, 1067)),
        ((427, 640), 800 / 427, (800, 1199)),
        ((400, 1200), 1333 / 1200, (444, 1333)),
        ((800, 1333), 1.0, (800, 1333)),
        # A portrait image must fit the landscape canvas: limited by 800 / 1000.
        ((1000, 500), 0.8, (800, 400)),
    ],
)
def test_compute_resize_scale(hw, expected_scale, expected_size):
    scale, size = transforms.compute_resize_scale(hw, (800, 1333))
    np.testing.assert_allclose(scale.numpy(), expected_scale, rtol=1e-6)
    assert tuple(size.numpy()) == expected_size


def test_resize_keep_ratio_boxes_and_values():
    image = np.full([40, 60, 3], 7, np.uint8)
    boxes = tf.constant([[10, 5, 30, 15], [50, 30, 60, 40]], tf.float32)
    resized, out_boxes, scale = transforms.resize_keep_ratio(image, boxes, (80, 90))
    assert resized.dtype == tf.float32 and resized.shape == (60, 90, 3)
    assert float(scale) == 1.5
    np.testing.assert_allclose(out_boxes.numpy(), [[15, 7.5, 45, 22.5], [75, 45, 90, 60]])
    np.testing.assert_allclose(resized.numpy(), 7.0)


def test_resize_clips_boxes_to_rounded_size():
    # 30 x 20 -> scale 80 / 30; width 53.33 rounds to 53, box edge clipped to 53.
    image = tf.zeros([30, 20, 3], tf.uint8)
    _, boxes, scale = transforms.resize_keep_ratio(image, [[0.0, 0.0, 20.0, 30.0]], (80, 90))
    np.testing.assert_allclose(float(scale), 80 / 30, rtol=1e-6)
    np.testing.assert_allclose(boxes.numpy(), [[0, 0, 53, 80]], rtol=1e-6)


def test_horizontal_flip():
    image = tf.reshape(tf.range(2 * 5 * 3), [2, 5, 3])
    boxes = tf.constant([[1.0, 0.0, 3.0, 2.0], [0.0, 0.5, 5.0, 1.0]])
    flipped, fboxes = transforms.horizontal_flip(image, boxes)
    np.testing.assert_array_equal(flipped.numpy(), image.numpy()[:, ::-1])
    np.testing.assert_allclose(fboxes.numpy(), [[2, 0, 4, 2], [0, 0.5, 5, 1]])


def test_random_flip_probability_extremes_and_rate():
    image = tf.zeros([4, 10, 3])
    boxes = tf.constant([[1.0, 1.0, 3.0, 2.0]])
    _, b, f = transforms.random_horizontal_flip(image, boxes, 1.0, tf.constant([1, 2], tf.int64))
    assert bool(f) and b.numpy().tolist() == [[7.0, 1.0, 9.0, 2.0]]
    _, b, f = transforms.random_horizontal_flip(image, boxes, 0.0, tf.constant([1, 2], tf.int64))
    assert not bool(f) and b.numpy().tolist() == [[1.0, 1.0, 3.0, 2.0]]
    flips = [
        bool(transforms.random_horizontal_flip(image, boxes, 0.5, tf.constant([i, 0], tf.int64))[2]) for i in range(200)
    ]
    assert 70 <= sum(flips) <= 130


def test_padded_size_and_pad_zeros():
    assert transforms.padded_size((800, 1333)) == (800, 1344)
    assert transforms.padded_size((80, 90)) == (96, 96)
    assert transforms.padded_size((64, 64), 32) == (64, 64)
    assert transforms.padded_size((33, 65), 1) == (33, 65)
    image = tf.ones([3, 5, 3])
    padded = transforms.pad_to_size(image, (8, 6)).numpy()
    assert padded.shape == (8, 6, 3)
    np.testing.assert_array_equal(padded[:3, :5], 1.0)
    np.testing.assert_array_equal(padded[3:], 0.0)
    np.testing.assert_array_equal(padded[:, 5:], 0.0)


def test_pad_boxes_truncates_and_pads():
    boxes = tf.constant([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    labels = tf.constant([4, 5, 6])
    b, lab = transforms.pad_boxes(boxes, labels, 5)
    np.testing.assert_array_equal(b.numpy()[3:], 0.0)
    np.testing.assert_array_equal(lab.numpy(), [4, 5, 6, -1, -1])
    b, lab = transforms.pad_boxes(boxes, labels, 2)
    np.testing.assert_array_equal(b.numpy(), [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(lab.numpy(), [4, 5])


def _seed(a, b):
    return tf.constant([a, b], tf.int64)


def test_random_short_side_target_range():
    targets = np.stack(
        [transforms.random_short_side_target((64, 96), (32, 40), _seed(i, 3)).numpy() for i in range(100)]
    )
    assert set(targets[:, 1]) == {96}
    assert targets[:, 0].min() == 32 and targets[:, 0].max() == 40
    portrait = transforms.random_short_side_target((96, 64), (32, 40), _seed(1, 3))
    assert int(portrait[0]) == 96 and 32 <= int(portrait[1]) <= 40


def test_preprocess_image(h):
    image = np.zeros([40, 60, 3], np.uint8)
    image[:, :30] = h.LEFT_COLOR
    image[:, 30:] = h.RIGHT_COLOR
    out, scale = transforms.preprocess_image(image, (80, 90))
    assert out.shape == (96, 96, 3) and out.dtype == tf.float32
    assert float(scale) == 1.5
    out = out.numpy()
    np.testing.assert_allclose(out[0, 0], h.normalized(h.LEFT_COLOR), rtol=1e-5)
    np.testing.assert_allclose(out[59, 89], h.normalized(h.RIGHT_COLOR), rtol=1e-5)
    np.testing.assert_array_equal(out[60:], 0.0)
    np.testing.assert_array_equal(out[:, 90:], 0.0)
    # Float input with 0..255 values gives the same result.
    out_f, _ = transforms.preprocess_image(image.astype(np.float32), (80, 90))
    np.testing.assert_allclose(out_f.numpy(), out, atol=1e-6)


# The reference's test-time resize: long side <= 1333, short side <= 800, own padding.
@pytest.mark.parametrize(
    "hw, expected_scale, expected_size, expected_padded",
    [
        # landscape: 800 / 480 limits; 640 * 5 / 3 = 1066.7 -> 1067, padded to 1088
        ((480, 640), 800 / 480, (800, 1067), (800, 1088)),
        # portrait stays portrait (a landscape canvas would give 800 x 600)
        ((640, 480), 800 / 480, (1067, 800), (1088, 800)),
        # very wide: the long side limits, 1333 / 4000; 333.25 -> 333
        ((1000, 4000), 1333 / 4000, (333, 1333), (352, 1344)),
        # very tall: 1333 / 90 limits; 30 * 14.81 = 444.3 -> 444
        ((90, 30), 1333 / 90, (1333, 444), (1344, 448)),
        # small images are enlarged: 800 / 30 and 800 / 20
        ((30, 40), 800 / 30, (800, 1067), (800, 1088)),
        ((20, 20), 40.0, (800, 800), (800, 800)),
        # already at the limits
        ((800, 1333), 1.0, (800, 1333), (800, 1344)),
        ((1333, 800), 1.0, (1333, 800), (1344, 800)),
    ],
)
def test_reference_test_resize_rule(hw, expected_scale, expected_size, expected_padded):
    scale, size, padded = transforms.reference_test_size(hw)
    np.testing.assert_allclose(float(scale), expected_scale, rtol=1e-6)
    assert tuple(size.numpy()) == expected_size
    assert tuple(padded.numpy()) == expected_padded


def test_preprocess_image_with_test_scale_pads_to_its_own_multiple_of_32(h):
    image = np.zeros([30, 20, 3], np.uint8)  # portrait
    image[:] = h.LEFT_COLOR
    # (short, long) = (64, 100): scale min(100 / 30, 64 / 20) = 3.2 -> 96 x 64, no padding needed
    out, scale = transforms.preprocess_image(image, test_scale=(64, 100))
    assert out.shape == (96, 64, 3) and float(scale) == pytest.approx(3.2)
    # (short, long) = (50, 100): scale min(3.33, 2.5) = 2.5 -> 75 x 50, padded to 96 x 64
    out, scale = transforms.preprocess_image(image, test_scale=(50, 100))
    out = out.numpy()
    assert out.shape == (96, 64, 3) and float(scale) == 2.5
    np.testing.assert_allclose(out[74, 49], h.normalized(h.LEFT_COLOR), rtol=1e-5)
    np.testing.assert_array_equal(out[75:], 0.0)
    np.testing.assert_array_equal(out[:, 50:], 0.0)
    with pytest.raises(ValueError, match="short"):
        transforms.preprocess_image(image, test_scale=(100, 50))
