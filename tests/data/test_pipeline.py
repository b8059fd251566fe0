"""make_dataset on the hand-made COCO folder: exact values of batches and metadata."""

import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal.data import CocoDataset, make_dataset, make_synthetic_coco

IMAGE_SIZE = (80, 90)  # padded canvas (96, 96)
# Resize scale of each image into IMAGE_SIZE, by hand: min(80 / h, 90 / w).
SCALES = {1: 1.5, 2: 3.0, 3: 80 / 30, 5: 5.0, 9: 90 / 32}
# Resized (h, w): floor(h * s + 0.5), floor(w * s + 0.5).
RESIZED = {1: (60, 90), 2: (60, 90), 3: (80, 53), 5: (80, 80), 9: (68, 90)}


def _batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def _train(coco, **kwargs):
    args = dict(training=True, batch_size=4, image_size=IMAGE_SIZE, shuffle=False, flip_prob=0.0)
    args.update(kwargs)
    return _batches(make_dataset(coco, **args))


def test_training_batch_shapes_dtypes_and_padding(coco):
    batches = _train(coco, max_boxes=5)
    assert len(batches) == 1  # 4 images with boxes; the empty image is left out
    images, targets = batches[0]
    assert images.shape == (4, 96, 96, 3) and images.dtype == np.float32
    assert targets["boxes"].shape == (4, 5, 4) and targets["boxes"].dtype == np.float32
    assert targets["labels"].shape == (4, 5) and targets["labels"].dtype == np.int32
    np.testing.assert_array_equal(
        targets["labels"],
        [[2, 0, 1, -1, -1], [0, -1, -1, -1, -1], [1, -1, -1, -1, -1], [0, 1, 2, -1, -1]],
    )
    np.testing.assert_array_equal(targets["boxes"][0, 3:], 0.0)
    np.testing.assert_array_equal(targets["boxes"][1, 1:], 0.0)
    # Each image's resized size before padding, for the loss to leave the padding out.
    assert targets["image_size"].dtype == np.int32
    np.testing.assert_array_equal(targets["image_size"], [RESIZED[i] for i in (1, 2, 3, 9)])


def test_training_static_shapes(coco):
    ds = make_dataset(coco, training=True, batch_size=2, image_size=IMAGE_SIZE, max_boxes=7)
    images_spec, targets_spec = ds.element_spec
    assert images_spec.shape == (2, 96, 96, 3)
    assert targets_spec["boxes"].shape == (2, 7, 4)
    assert targets_spec["labels"].shape == (2, 7)
    assert targets_spec["image_size"].shape == (2, 2)


def test_training_boxes_after_resize(coco, h):
    _, targets = _train(coco, max_boxes=5)[0]
    boxes = targets["boxes"]
    np.testing.assert_allclose(boxes[0, :3], [[15, 7.5, 45, 22.5], [75, 45, 90, 60], [0, 0, 4.5, 9]])
    np.testing.assert_allclose(boxes[1, 0], [6, 9, 36, 33])
    np.testing.assert_allclose(boxes[2, 0], [0, 0, 53, 80], rtol=1e-6)  # clipped to width 53
    s = 90 / 32
    np.testing.assert_allclose(boxes[3, :3], np.asarray(h.EXPECTED_BOXES[9], np.float32) * s, rtol=1e-6)


def test_image_values_normalised_and_zero_padded(coco, h):
    images, _ = _train(coco)[0]
    a, gray, rgba = images[0], images[1], images[2]
    np.testing.assert_allclose(a[0, 0], h.normalized(h.LEFT_COLOR), rtol=1e-5)
    np.testing.assert_allclose(a[59, 89], h.normalized(h.RIGHT_COLOR), rtol=1e-5)
    np.testing.assert_array_equal(a[60:], 0.0)
    np.testing.assert_array_equal(a[:, 90:], 0.0)
    # Grayscale -> three equal channels; RGBA -> alpha dropped.
    np.testing.assert_allclose(gray[10, 10], h.normalized([h.GRAY_VALUE] * 3), rtol=1e-5)
    np.testing.assert_allclose(rgba[40, 20], h.normalized(h.RGBA_COLOR[:3]), rtol=1e-5)
    np.testing.assert_array_equal(rgba[:, 53:], 0.0)
    np.testing.assert_array_equal(rgba[80:], 0.0)


def test_flip_boxes_and_pixels(coco, h):
    images, targets = _train(coco, flip_prob=1.0)[0]
    # Image 1 resized to 60 x 90: x1' = 90 - x2, x2' = 90 - x1.
    np.testing.assert_allclose(targets["boxes"][0, :3], [[45, 7.5, 75, 22.5], [0, 45, 15, 60], [85.5, 0, 90, 9]])
    # Image 3 resized to 80 x 53: box [0, 0, 53, 80] stays [0, 0, 53, 80].
    np.testing.assert_allclose(targets["boxes"][2, 0], [0, 0, 53, 80], rtol=1e-6)
    np.testing.assert_allclose(images[0, 0, 0], h.normalized(h.RIGHT_COLOR), rtol=1e-5)
    np.testing.assert_allclose(images[0, 0, 89], h.normalized(h.LEFT_COLOR), rtol=1e-5)
    np.testing.assert_array_equal(images[0][:, 90:], 0.0)  # padding stays bottom/right


def test_max_boxes_keeps_first(coco):
    _, targets = _train(coco, max_boxes=2)[0]
    np.testing.assert_array_equal(targets["labels"], [[2, 0], [0, -1], [1, -1], [0, 1]])
    np.testing.assert_allclose(targets["boxes"][0], [[15, 7.5, 45, 22.5], [75, 45, 90, 60]])


def test_eval_batches_and_meta(coco, h):
    ds = make_dataset(coco, training=False, batch_size=2, image_size=IMAGE_SIZE, deterministic=True)
    batches = _batches(ds)
    assert [len(b[0]) for b in batches] == [2, 2, 1]  # no remainder dropped
    ids = np.concatenate([b[2]["image_id"] for b in batches])
    np.testing.assert_array_equal(ids, [1, 2, 3, 5, 9])  # empty image 5 kept
    meta = {k: np.concatenate([b[2][k] for b in batches]) for k in ("scale", "original_size")}
    assert batches[0][2]["image_id"].dtype == np.int64
    assert meta["scale"].dtype == np.float32 and meta["original_size"].dtype == np.int32
    np.testing.assert_allclose(meta["scale"], [SCALES[i] for i in ids], rtol=1e-6)
    np.testing.assert_array_equal(meta["original_size"], [h.SIZES[i] for i in ids])
    boxes = np.concatenate([b[1]["boxes"] for b in batches])
    labels = np.concatenate([b[1]["labels"] for b in batches])
    np.testing.assert_array_equal(labels[3], -1)  # the empty image
    # Dividing by scale maps the (unflipped) boxes back to original pixels, up to
    # the clip at the rounded resized border (image 3: width 53 / (80 / 30) = 19.875).
    for row, image_id in enumerate(ids):
        n = len(h.EXPECTED_LABELS[image_id])
        rh, rw = RESIZED[image_id]
        border = np.array([rw, rh, rw, rh]) / SCALES[image_id]
        expected = np.minimum(np.asarray(h.EXPECTED_BOXES[image_id]).reshape(-1, 4), border)
        back = boxes[row, :n] / meta["scale"][row]
        np.testing.assert_allclose(back, expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(labels[row, :n], h.EXPECTED_LABELS[image_id])
    # Padded eval images: zeros outside each resized image.
    images = np.concatenate([b[0] for b in batches])
    for row, image_id in enumerate(ids):
        rh, rw = RESIZED[image_id]
        assert np.all(images[row, rh:] == 0) and np.all(images[row, :, rw:] == 0)
        assert np.any(images[row, rh - 1, rw - 1] != 0)


def test_eval_ignores_flip_by_default(coco):
    ds = make_dataset(coco, training=False, batch_size=8, image_size=IMAGE_SIZE, deterministic=True)
    _, targets, _ = next(iter(ds))
    np.testing.assert_allclose(targets["boxes"][0, 0].numpy(), [15, 7.5, 45, 22.5])


def test_bad_arguments(coco):
    with pytest.raises(ValueError, match="multiscale"):
        make_dataset(coco, training=True, batch_size=2, image_size=(64, 96), multiscale=(32, 80))
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(coco, training=True, batch_size=0)
    with pytest.raises(TypeError, match="CocoDataset"):
        make_dataset([1, 2], training=True, batch_size=1)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    paths = make_synthetic_coco(str(root), num_train=12, num_val=2, image_size=(48, 64), min_size=6, seed=5)
    return CocoDataset(paths["train_ann_file"], paths["train_image_dir"])


def _epochs(ds, n):
    it = []
    for _ in range(n):
        it.append(_batches(ds))
    return it


def test_deterministic_mode_repeats_exactly(synthetic):
    def build():
        return make_dataset(
            synthetic,
            training=True,
            batch_size=4,
            image_size=(40, 56),
            multiscale=(24, 40),
            seed=11,
            deterministic=True,
        )

    first, second = _epochs(build(), 2), _epochs(build(), 2)
    assert len(first[0]) == 3  # 12 images, batch 4
    for epoch_a, epoch_b in zip(first, second):
        for (ia, ta), (ib, tb) in zip(epoch_a, epoch_b):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(ta["boxes"], tb["boxes"])
            np.testing.assert_array_equal(ta["labels"], tb["labels"])
    # A new epoch reshuffles / re-augments (reproducibly), so it differs from the first.
    assert not np.array_equal(first[0][0][0], first[1][0][0])
    # A different seed gives different batches.
    other = make_dataset(
        synthetic,
        training=True,
        batch_size=4,
        image_size=(40, 56),
        multiscale=(24, 40),
        seed=12,
        deterministic=True,
    )
    assert not np.array_equal(_batches(other)[0][0], first[0][0][0])


def test_multiscale_sizes_vary_within_range(synthetic):
    ds = make_dataset(
        synthetic,
        training=True,
        batch_size=12,
        image_size=(40, 56),
        multiscale=(24, 40),
        flip_prob=0.0,
        seed=3,
        deterministic=True,
    )
    images, targets = _batches(ds)[0]
    assert images.shape == (12, 64, 64, 3)
    # Height of the resized content = rows that are not all zero (original 48 x 64):
    # the short side s in [24, 40] gives scale min(s / 48, 56 / 64) and height <= 40.
    heights = [int(np.max(np.nonzero(np.any(img != 0, axis=(1, 2)))[0])) + 1 for img in images]
    assert min(heights) >= 24 and max(heights) <= 40
    widths = [int(np.max(np.nonzero(np.any(img != 0, axis=(0, 2)))[0])) + 1 for img in images]
    np.testing.assert_array_equal(targets["image_size"], np.stack([heights, widths], axis=1))
    assert len(set(heights)) > 3
    valid = targets["labels"] >= 0
    boxes = targets["boxes"][valid]
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all(boxes[:, 3] <= 40) and np.all(boxes[:, 2] <= 56)


# The reference's test-time resize with small limits (short 64, long 100), by hand:
# scale = min(64 / short side, 100 / long side); padded to the image's own multiple of 32.
TEST_SCALE = (64, 100)
TEST_RESIZED = {1: (64, 96), 2: (64, 96), 3: (96, 64), 5: (64, 64), 9: (64, 85)}
TEST_PADDED = {1: (64, 96), 2: (64, 96), 3: (96, 64), 5: (64, 64), 9: (64, 96)}
TEST_SCALES = {1: 1.6, 2: 3.2, 3: 3.2, 5: 4.0, 9: 64 / 24}


def test_eval_with_test_scale_one_image_per_batch_at_its_own_size(coco, h):
    ds = make_dataset(coco, training=False, batch_size=1, test_scale=TEST_SCALE, deterministic=True)
    assert ds.element_spec[0].shape.as_list() == [None, None, None, 3]
    batches = _batches(ds)
    assert [int(b[2]["image_id"][0]) for b in batches] == [1, 2, 3, 5, 9]
    for images, targets, meta in batches:
        image_id = int(meta["image_id"][0])
        assert images.shape == (1, *TEST_PADDED[image_id], 3)
        np.testing.assert_array_equal(targets["image_size"][0], TEST_RESIZED[image_id])
        np.testing.assert_allclose(meta["scale"][0], TEST_SCALES[image_id], rtol=1e-6)
        rh, rw = TEST_RESIZED[image_id]
        assert np.all(images[0, rh:] == 0) and np.all(images[0, :, rw:] == 0)
        assert np.any(images[0, rh - 1, rw - 1] != 0)
        n = len(h.EXPECTED_LABELS[image_id])
        back = targets["boxes"][0, :n] / meta["scale"][0]
        border = np.array([rw, rh, rw, rh]) / TEST_SCALES[image_id]
        expected = np.minimum(np.asarray(h.EXPECTED_BOXES[image_id]).reshape(-1, 4), border)
        np.testing.assert_allclose(back, expected, rtol=1e-5, atol=1e-4)


def test_eval_with_test_scale_batches_group_equal_padded_sizes(coco):
    batches = _batches(make_dataset(coco, training=False, batch_size=2, test_scale=TEST_SCALE))
    ids = sorted(int(i) for b in batches for i in b[2]["image_id"])
    assert ids == [1, 2, 3, 5, 9]
    for images, _, meta in batches:
        assert len(images) <= 2
        for image_id in meta["image_id"]:
            assert images.shape[1:3] == TEST_PADDED[int(image_id)]
    assert sorted(len(b[0]) for b in batches) == [1, 1, 1, 2]  # {1, 2} or {1, 9} or {2, 9} together


def test_test_scale_is_for_evaluation_only(coco):
    with pytest.raises(ValueError, match="test_scale"):
        make_dataset(coco, training=True, batch_size=2, test_scale=TEST_SCALE)
    with pytest.raises(ValueError, match="short"):
        make_dataset(coco, training=False, batch_size=2, test_scale=(100, 64))


def test_evaluation_rows_keep_the_dataset_order_whatever_deterministic_says(tmp_path, h):
    # The first image is slow to decode, the seven after it are tiny: a parallel
    # map free to hand rows out as they finish puts image 1 last.
    rng = np.random.default_rng(0)
    sizes = [(900, 900)] + [(8, 8)] * 7
    images = []
    for image_id, (height, width) in enumerate(sizes, start=1):
        h.save_rgb(str(tmp_path / "images" / f"{image_id}.png"), rng.integers(0, 255, [height, width, 3]))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": height, "width": width})
    ann_file = h.write_json(str(tmp_path / "ann.json"), images, [])
    dataset = CocoDataset(ann_file, str(tmp_path / "images"))
    # Fused map-and-batch (tf.data's default rewrite) writes rows into their
    # batch slots and so hides the order; without it the map's order shows.
    unfused = tf.data.Options()
    unfused.experimental_optimization.map_and_batch_fusion = False
    for deterministic in (False, True):
        ds = make_dataset(dataset, training=False, batch_size=1, image_size=(8, 8), deterministic=deterministic)
        assert ds.options().deterministic
        ids = [int(meta["image_id"][0]) for _, _, meta in ds.with_options(unfused)]
        assert ids == list(range(1, 9))
        # Training's order stays the flag's to decide.
        train = make_dataset(dataset, training=True, batch_size=1, image_size=(8, 8), deterministic=deterministic)
        assert train.options().deterministic is deterministic
