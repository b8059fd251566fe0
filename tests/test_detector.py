"""GFocalDetector: building, shapes, serialisation, errors, and learning."""

import os

import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf

from keras_gfocal import GFocalDetector
from keras_gfocal import boxes as box_ops
from keras_gfocal.presets import PRESETS


def _toy_images(num_images=3, size=128, seed=0):
    """Images with two bright rectangles each; the channel lit is the class."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, (num_images, size, size, 3)).astype("float32")
    boxes = np.zeros((num_images, 3, 4), "float32")
    labels = -np.ones((num_images, 3), "int32")
    for i in range(num_images):
        for j in range(2):
            w, h = rng.integers(24, 64, 2)
            x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
            c = int(rng.integers(0, 2))
            images[i, y1 : y1 + h, x1 : x1 + w, c] += 2.0
            boxes[i, j] = [x1, y1, x1 + w, y1 + h]
            labels[i, j] = c
    return images, boxes, labels


def _assert_overfits(preset, steps):
    keras.utils.set_random_seed(1)
    images, boxes, labels = _toy_images()
    model = GFocalDetector.from_preset(preset, num_classes=2)
    # Annealed to zero: at a constant rate the boxes keep
    # moving around the optimum, and float32 rounding alone decided whether
    # one of them ended under 0.9 IoU.
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)))
    batch = (images, {"boxes": boxes, "labels": labels})
    running_means = []  # the logged loss is the mean over the epoch so far
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda step, logs: running_means.append(logs["loss"]))
    # One epoch of ``steps`` steps on the same batch: fit's per-epoch work is not repeated.
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=steps, verbose=0, callbacks=[record])
    last = steps * running_means[-1] - (steps - 1) * running_means[-2]
    assert last < 0.5 * running_means[0], (running_means[0], last)
    pred = model.predict(images, verbose=0)
    # per-edge localisation confidence: a top-1 probability on each kept row, zeros on padding
    assert pred["edge_confidence"].shape == (len(images), model.max_detections, 4)
    for i in range(len(images)):
        n = int(pred["num_detections"][i])
        assert np.all(pred["edge_confidence"][i, n:] == 0)
        confident = pred["scores"][i, :n] >= 0.3
        # Trained by DFL towards two adjacent bins, a well-placed box's edges are sharp: far above
        # the 1/17 of a flat distribution (an untrained head sits near it).
        assert np.all(pred["edge_confidence"][i, :n][confident] > 0.3), pred["edge_confidence"][i, :n][confident]
        for box, label in zip(boxes[i], labels[i]):
            if label < 0:
                continue
            same = confident & (pred["labels"][i, :n] == label)
            ious = box_ops.pairwise_iou(box[None], pred["boxes"][i, :n][same]).numpy()
            assert ious.size and ious.max() >= 0.9, (i, box, ious)


def test_gfocal_v2_overfits_a_few_images():
    _assert_overfits("gfocal_v2_tiny", steps=200)


def test_gfocal_v1_mode_trains():
    _assert_overfits("gfocal_v1_tiny", steps=200)


def test_raw_output_shapes_and_point_order():
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=5)
    images = np.random.default_rng(0).normal(size=(2, 96, 64, 3)).astype("float32")
    out = model(images)
    points, strides, counts = model.points(96, 64)
    assert counts == [12 * 8, 6 * 4, 3 * 2, 2 * 1, 1 * 1]
    assert out["cls_scores"].shape == (2, sum(counts), 5)
    assert out["reg_logits"].shape == (2, sum(counts), 4 * 17)
    # P3 first, row-major: the second point is one stride to the right, the ninth one row down.
    points = np.asarray(points)
    np.testing.assert_allclose(
        points[[0, 1, 8, 95, 96, 97, 120]], [[0, 0], [8, 0], [0, 8], [56, 88], [0, 0], [16, 0], [0, 0]]
    )
    np.testing.assert_array_equal(np.asarray(strides)[[0, 95, 96, 119, 120, 126, 128]], [8, 8, 16, 16, 32, 64, 128])
    # Each output row is the head's output at its point's cell: level maps through the head's own layers.
    features = model.fpn(model.backbone(images, training=False), training=False)
    reg = np.asarray(out["reg_logits"])
    start = 0
    for level, (feature, scale) in enumerate(zip(features, model.head.scales)):
        x = feature
        for layer in model.head.reg_tower:
            x = layer(x)
        level_map = np.asarray(scale(model.head.reg_out(x)))  # [B, h, w, 68]
        h, w = level_map.shape[1:3]
        s = 8 * 2**level
        for row in range(start, start + h * w):
            px, py = points[row]
            np.testing.assert_allclose(reg[:, row], level_map[:, int(py) // s, int(px) // s], rtol=1e-4, atol=1e-5)
        start += h * w
    assert start == sum(counts)
    cls = np.asarray(out["cls_scores"])
    assert np.all((cls > 0) & (cls < 1))


def test_initial_joint_score_is_prior_times_half_quality():
    # Head weights ~N(0, 0.01) make logits ~ the bias, so cls ~ 0.01; the DGQP's
    # output starts near sigmoid(0) = 0.5.
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    cls = np.asarray(model(np.zeros((1, 64, 64, 3), "float32"))["cls_scores"])
    np.testing.assert_allclose(cls, 0.01 * 0.5, rtol=0.05)


def test_compute_loss_takes_the_detectors_loss_settings():
    # Each of the four settings away from its default, against the NumPy loss table computed with
    # them: a weight left at its default scales its term by another factor, and atss_topk 9 instead
    # of 3 makes other points positive (every term changes).
    keras.utils.set_random_seed(1)
    images, boxes, labels = _toy_images(num_images=2, size=64, seed=1)
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny", num_classes=2, qfl_weight=0.5, giou_weight=3.0, dfl_weight=1.5, atss_topk=3
    )
    y_pred = model(images)
    total = float(model.compute_loss(images, {"boxes": boxes, "labels": labels}, y_pred))
    got = {"qfl": model.qfl_tracker, "giou": model.giou_tracker, "dfl": model.dfl_tracker}
    scores, reg = np.asarray(y_pred["cls_scores"]), np.asarray(y_pred["reg_logits"])
    expected = ref.gfocal_loss(
        scores, reg, boxes, labels, (64, 64), topk=3, weights=(0.5, 3.0, 1.5), return_details=True
    )
    top_9 = ref.gfocal_loss(scores, reg, boxes, labels, (64, 64), return_details=True)
    assert expected["positives"] != top_9["positives"]
    for key in ("qfl", "giou", "dfl"):
        np.testing.assert_allclose(float(got[key].result()), expected[key], rtol=2e-5, err_msg=key)
    np.testing.assert_allclose(total, expected["qfl"] + expected["giou"] + expected["dfl"], rtol=2e-5)


def test_keras_file_round_trip_safe_mode(tmp_path):
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, class_names=["a", "b", "c"])
    images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    before = model(images)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    after = loaded(images)
    assert isinstance(loaded, GFocalDetector) and loaded.class_names == ["a", "b", "c"]
    np.testing.assert_allclose(np.asarray(after["cls_scores"]), np.asarray(before["cls_scores"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(after["reg_logits"]), np.asarray(before["reg_logits"]), rtol=1e-5, atol=1e-6)


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_r50_preset_at_800x1333_builds_with_reference_shapes():
    model = GFocalDetector.from_preset("gfocal_v2_r50_fpn", num_classes=80, backbone_weights=None)
    out = model(np.zeros((1, 800, 1344, 3), "float32"))
    sizes = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]
    num_points = sum(h * w for h, w in sizes)
    assert out["cls_scores"].shape == (1, num_points, 80)
    assert out["reg_logits"].shape == (1, num_points, 68)
    # The reference's count (PyTorch parameters; BatchNorm running statistics are buffers there).
    statistics = [w for w in model.weights if w.path.endswith(("moving_mean", "moving_variance"))]
    assert _count(model.weights) - _count(statistics) == 32_441_946
    assert _count(statistics) == 2 * 26_560  # every BatchNorm channel of ResNet-50

    # Frozen: the stem and layer1 (conv and BatchNorm) and every running statistic;
    # the BatchNorm scale and shift of layer2-4 train.
    def names(weights):
        return {w.path.split("/", 1)[1] for w in weights}

    frozen = names(model.non_trainable_weights)
    stem_and_layer1 = {
        p for p in names(model.weights) if p.startswith(("backbone/conv1/", "backbone/bn1/", "backbone/layer1_"))
    }
    assert len(stem_and_layer1) == 1 + 4 + 3 * (3 * 5) + 5  # stem conv+bn, 3 blocks x 3 conv+bn, downsample
    assert frozen == stem_and_layer1 | names(statistics)
    trainable = names(model.trainable_weights)
    assert {"backbone/layer2_0/bn2/gamma", "backbone/layer4_2/bn3/beta"} <= trainable
    assert _count(model.trainable_weights) == 32_441_946 - 9_536 - 215_808  # less stem and layer1
    # DGQP: 20 -> 64 -> 1 (1,409 parameters), negligible next to the rest.
    assert model.head.quality.count_params() == 20 * 64 + 64 + 64 + 1


def test_gfocal_v1_has_no_dgqp_and_returns_logits():
    model = GFocalDetector.from_preset("gfocal_v1_tiny", num_classes=2)
    out = model(np.zeros((1, 64, 64, 3), "float32"))
    assert model.head.quality is None
    np.testing.assert_allclose(
        np.asarray(out["cls_scores"]), 1 / (1 + np.exp(-np.asarray(out["cls_logits"]))), rtol=1e-6
    )


def test_presets_listed():
    assert {"gfocal_v2_r50_fpn", "gfocal_v2_r101_fpn", "gfocal_v1_r50_fpn", "gfocal_v2_tiny"} <= set(PRESETS)


@pytest.mark.parametrize(
    "shape, message",
    [((64, 64, 3), "rank 3"), ((1, 64, 64, 1), "3-channel"), ((1, 60, 64, 3), "multiple of 32")],
)
def test_bad_image_shapes_get_clear_errors(shape, message):
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, "float32"))


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="Unknown preset 'gfocal_v9'.*gfocal_v2_r50_fpn"):
        GFocalDetector.from_preset("gfocal_v9", num_classes=2)


@pytest.mark.parametrize(
    "boxes, labels, message",
    [
        ([[[30, 10, 20, 40]]], [[0]], "x2 < x1"),
        ([[[10, 10, 20, 40]]], [[2]], "num_classes=2"),
    ],
)
def test_bad_targets_get_clear_errors(boxes, labels, message):
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    model.compile()
    x = np.zeros((1, 64, 64, 3), "float32")
    y = {"boxes": np.array(boxes, "float32"), "labels": np.array(labels, "int32")}
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0)


def test_bad_targets_inside_a_dataset_fail_with_the_message():
    import tensorflow as tf

    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    model.compile()
    x = np.zeros((1, 64, 64, 3), "float32")
    y = {"boxes": np.array([[[30, 10, 20, 40]]], "float32"), "labels": np.array([[0]], "int32")}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="x2 < x1"):
        model.fit(ds, epochs=1, verbose=0)


def test_train_step_compiles_with_xla_and_matches_graph_mode():
    images, boxes, labels = _toy_images(num_images=2, size=64)
    y = {"boxes": boxes, "labels": labels}
    logs, steps = {}, {}
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
        model.build(images.shape)
        before = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=jit)
        logs[jit] = model.train_on_batch(images, y, return_dict=True)
        steps[jit] = [after - start for after, start in zip(model.get_weights(), before)]
    for key in ("loss", "qfl", "giou", "dfl"):
        np.testing.assert_allclose(logs[True][key], logs[False][key], rtol=1e-4, err_msg=key)
    # the same step (SGD at rate 1: minus the gradient), measured against the largest move
    largest = max(np.abs(step).max() for step in steps[False])
    assert largest > 1e-3
    for xla, graph in zip(steps[True], steps[False]):
        np.testing.assert_allclose(xla, graph, rtol=0, atol=1e-4 * largest)
