"""Fast checks of keras_gfocal.detection_loss for its mutation run (benchmarks/mutation_score.py).

Eager, small canvases, no model: target validation (the exact messages), the in-graph checks,
the valid-point mask against a NumPy count of cells, the loss terms against
tests/numpy_reference.py's loss table on small hand-made batches, and the replica helpers
under a two-replica MirroredStrategy (in a subprocess, as TensorFlow's devices are fixed once
initialised).
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf

from keras_gfocal.boxes import make_points
from keras_gfocal.detection_loss import (
    GFocalLoss,
    graph_checks,
    replica_mean,
    scale_for_replicas,
    valid_point_mask,
    validate_targets,
)

# ------------------------------------------------------------------ validate_targets

GOOD_BOXES = np.array(
    [[[1.0, 2.0, 10.0, 12.0], [0.0, 0.0, 0.0, 0.0]], [[5.0, 5.0, 5.0, 9.0], [3.0, 4.0, 8.0, 4.0]]], np.float32
)
GOOD_LABELS = np.array([[0, -1], [2, 0]], np.int32)


def _raises(message, boxes, labels, num_classes=3, image_size=None):
    with pytest.raises(ValueError) as info:
        validate_targets(boxes, labels, num_classes, image_size=image_size)
    assert str(info.value) == message


def test_validate_targets_accepts_degenerate_boxes_padding_and_sizes_of_one():
    # Zero-width / zero-height boxes are boxes; padding rows (-1) may hold anything.
    boxes = GOOD_BOXES.copy()
    boxes[0, 1] = [np.nan, 5.0, 1.0, -np.inf]
    validate_targets(boxes, GOOD_LABELS, 3)
    validate_targets(boxes, GOOD_LABELS, 3, image_size=np.array([[1, 1], [1, 7]]))
    validate_targets(boxes[:, :0], GOOD_LABELS[:, :0], 3)  # no box slot at all


def test_validate_targets_shapes():
    _raises(
        "y['boxes'] must have shape [batch, max_boxes, 4] (xyxy pixels), got (2, 4).", GOOD_BOXES[:, 0], GOOD_LABELS
    )
    _raises(
        "y['boxes'] must have shape [batch, max_boxes, 4] (xyxy pixels), got (2, 2, 5).",
        np.concatenate([GOOD_BOXES, GOOD_BOXES[..., :1]], -1),
        GOOD_LABELS,
    )
    _raises(
        "y['labels'] must have shape (2, 2) to match y['boxes'], got (2, 3).", GOOD_BOXES, np.zeros((2, 3), np.int32)
    )
    _raises(
        "y['labels'] must have shape (2, 2) to match y['boxes'], got (2, 2, 1).", GOOD_BOXES, GOOD_LABELS[..., None]
    )


def test_validate_targets_labels():
    labels = np.array([[0, -1], [4, 3]], np.int32)
    _raises(
        "y['labels'] holds label 4, but the model has num_classes=3; labels must be in [0, num_classes) "
        "with -1 for padding.",
        GOOD_BOXES,
        labels,
    )
    _raises(
        "y['labels'] holds label 3, but the model has num_classes=3; labels must be in [0, num_classes) "
        "with -1 for padding.",
        GOOD_BOXES,
        np.array([[3, -1], [2, 0]], np.int32),
    )
    validate_targets(GOOD_BOXES, labels, 5)
    # -5 is padding too (any negative label)
    validate_targets(GOOD_BOXES, np.array([[0, -5], [2, 0]], np.int32), 3)


def test_validate_targets_non_finite_boxes_counted_and_the_first_named():
    boxes = GOOD_BOXES.copy()
    boxes[1, 0, 2] = np.inf  # label 2
    boxes[1, 1, 2] = np.nan  # label 0: a class-0 box is checked like any other; the same coordinate
    _raises(
        "y['boxes'] holds 2 box(es) with a non-finite coordinate (NaN or infinity), the first in image 1, "
        "row 0: [5.0, 5.0, inf, 9.0]. Boxes must be finite xyxy pixels.",
        boxes,
        GOOD_LABELS,
    )
    boxes = GOOD_BOXES.copy()
    boxes[1, 1, 0] = -np.inf
    _raises(
        "y['boxes'] holds 1 box(es) with a non-finite coordinate (NaN or infinity), the first in image 1, "
        "row 1: [-inf, 4.0, 8.0, 4.0]. Boxes must be finite xyxy pixels.",
        boxes,
        GOOD_LABELS,
    )


def test_validate_targets_inverted_boxes():
    # Valid boxes that compare x with y coordinates the "wrong" way round, then inverted ones.
    fine = [[1.0, 20.0, 10.0, 30.0], [0.0, 0.0, 10.0, 5.0], [3.0, 4.0, 8.0, 4.0], [2.0, 2.0, 2.0, 2.0]]
    labels = np.zeros((1, 5), np.int32)
    validate_targets(np.array([fine + [[0.0, 0.0, 1.0, 1.0]]], np.float32), labels, 3)
    for wrong in ([5.0, 1.0, 4.0, 9.0], [1.0, 9.0, 3.0, 8.0], [9.0, 1.0, 8.0, 0.5]):  # x2 < x1, y2 < y1, both
        _raises(
            f"y['boxes'] holds a box with x2 < x1 or y2 < y1: {wrong}. "
            "Boxes must be xyxy pixels (x1, y1, x2, y2), not xywh.",
            np.array([fine + [wrong]], np.float32),
            labels,
        )
    boxes = GOOD_BOXES.copy()
    boxes[1, 1] = [3.0, 4.0, 8.0, 3.5]  # y2 < y1, a class-0 box
    _raises(
        "y['boxes'] holds a box with x2 < x1 or y2 < y1: [3.0, 4.0, 8.0, 3.5]. "
        "Boxes must be xyxy pixels (x1, y1, x2, y2), not xywh.",
        boxes,
        GOOD_LABELS,
    )


def test_validate_targets_image_size():
    _raises(
        "y['image_size'] must have shape [batch, 2] (each image's resized height, width before padding), got (2,).",
        GOOD_BOXES,
        GOOD_LABELS,
        image_size=np.array([4, 4]),
    )
    _raises(
        "y['image_size'] must have shape [batch, 2] (each image's resized height, width before padding), got (3, 2).",
        GOOD_BOXES,
        GOOD_LABELS,
        image_size=np.ones((3, 2), np.int32),
    )
    _raises(
        "y['image_size'] holds a size below 1: [[5, 0], [3, 3]].",
        GOOD_BOXES,
        GOOD_LABELS,
        image_size=np.array([[5, 0], [3, 3]]),
    )


# ------------------------------------------------------------------ graph_checks (eager: they raise at once)


def _assert_message(check_args, message, *data):
    """Eager Assert ops raise at once; their summarized data is the message, then the values."""
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        graph_checks(*check_args)
    summary = str(info.value).split("Summarized data: ", 1)[1]
    assert summary == "\n".join([repr(("GFocalDetector: " + message).encode()), *data])


def test_graph_checks_pass_on_good_targets_and_name_each_problem():
    boxes = tf.constant(GOOD_BOXES)
    labels = tf.constant(GOOD_LABELS)
    size = tf.constant([[64, 30], [1, 96]], tf.int32)
    assert len(graph_checks(boxes, labels, 3)) == 3
    assert len(graph_checks(boxes, labels, 3, size, (64, 96))) == 4
    assert len(graph_checks(boxes, labels, 3, size, None)) == 3
    # padding rows may hold anything; valid boxes may compare x with y coordinates either way
    padded = GOOD_BOXES.copy()
    padded[0, 1] = [np.nan, 9.0, 1.0, 0.0]
    padded[1] = [[1.0, 20.0, 10.0, 30.0], [0.0, 0.0, 10.0, 5.0]]
    graph_checks(tf.constant(padded), labels, 3, size, (64, 96))

    bad = GOOD_BOXES.copy()
    bad[1, 1, 3] = np.inf  # a class-0 box
    _assert_message(
        (tf.constant(bad), labels, 3),
        "a ground-truth box has a non-finite coordinate (NaN or infinity); boxes must be finite xyxy pixels.",
    )
    _assert_message(
        (boxes, tf.constant([[0, -1], [2, 3]]), 3),
        "a label is >= num_classes=3; labels must be in [0, num_classes) with -1 for padding. Max label:",
        "3",
    )
    _assert_message(
        (boxes, tf.constant([[0, 7], [2, 1]]), 5),
        "a label is >= num_classes=5; labels must be in [0, num_classes) with -1 for padding. Max label:",
        "7",
    )
    for wrong in ([5.0, 1.0, 4.9, 9.0], [3.0, 4.0, 8.0, 3.9]):
        bad = GOOD_BOXES.copy()
        bad[1, 1] = wrong  # a class-0 box
        _assert_message(
            (tf.constant(bad), labels, 3), "a ground-truth box has x2 < x1 or y2 < y1; boxes must be xyxy pixels."
        )
    for wrong in ([[64, 30], [0, 96]], [[65, 30], [1, 96]], [[64, 30], [1, 97]]):
        _assert_message(
            (boxes, labels, 3, tf.constant(wrong, tf.int32), (64, 96)),
            "y['image_size'] must hold each image's resized (height, width) before padding, "
            "between 1 and the input size. Got:",
            ", ".join(str(v) for row in wrong for v in row),
            repr(b"input (height, width):"),
            "64, 96",
        )
    # five images: the message shows the first 8 sizes (summarize=8), then "..."
    sizes = [[65, 30], [1, 96], [2, 3], [4, 5], [6, 7]]
    _assert_message(
        (tf.zeros((5, 1, 4)), -tf.ones((5, 1), tf.int32), 3, tf.constant(sizes, tf.int32), (64, 96)),
        "y['image_size'] must hold each image's resized (height, width) before padding, "
        "between 1 and the input size. Got:",
        "65, 30, 1, 96, 2, 3, 4, 5, ...",
        repr(b"input (height, width):"),
        "64, 96",
    )


# ------------------------------------------------------------------ valid_point_mask


def _numpy_mask(canvas, image_sizes, strides, size_divisor):
    """Cell (col, row) of stride s is valid when col < ceil(Wp / s) and row < ceil(Hp / s)."""
    rows = []
    for h, w in image_sizes:
        hp = math.ceil(h / size_divisor) * size_divisor
        wp = math.ceil(w / size_divisor) * size_divisor
        flags = []
        for s in strides:
            fh, fw = math.ceil(canvas[0] / s), math.ceil(canvas[1] / s)
            flags += [col < math.ceil(wp / s) and row < math.ceil(hp / s) for row in range(fh) for col in range(fw)]
        rows.append(flags)
    return np.array(rows)


@pytest.mark.parametrize("size_divisor", [32, 1, 5])
def test_valid_point_mask_against_numpy(size_divisor):
    canvas = (96, 160)
    strides = (8, 16, 32, 64)
    # sizes on, one above and one below multiples of 32 (and of 5, 8, 16); height and width differ
    sizes = [(96, 160), (32, 64), (33, 65), (31, 63), (1, 1), (9, 17), (40, 96), (95, 129), (64, 33)]
    points, point_strides, _ = make_points(*canvas, strides=strides)
    got = valid_point_mask(points, point_strides, tf.constant(sizes, tf.int32), size_divisor)
    expected = _numpy_mask(canvas, sizes, strides, size_divisor)
    assert got.dtype == tf.bool and got.shape == expected.shape
    np.testing.assert_array_equal(got.numpy(), expected)
    assert 0 < expected.sum() < expected.size


def test_valid_point_mask_default_divisor_is_32():
    points, point_strides, _ = make_points(64, 64, strides=(8,))
    got = valid_point_mask(points, point_strides, tf.constant([[20, 40]], tf.int32)).numpy()
    # (20, 40) pads to (32, 64): rows 0-3, all 8 columns.
    expected = np.zeros((8, 8), bool)
    expected[:4, :] = True
    np.testing.assert_array_equal(got.reshape(8, 8), expected)


# ------------------------------------------------------------------ replicas

_TWO_REPLICAS = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_gfocal.detection_loss import GFocalLoss, replica_mean, scale_for_replicas

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = {k: np.asarray(v, np.int32 if k == "labels" else np.float32)
            for k, v in json.load(open(sys.argv[1])).items()}

    @tf.function
    def step():
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        value = tf.cast(r, tf.float32) * 4.0 + 1.0  # replica 0: 1, replica 1: 5
        take = lambda k: tf.gather(tf.constant(data[k]), [r])  # noqa: E731  one image per replica
        terms = GFocalLoss(2, strides=(8, 16))(
            {"cls_scores": take("cls_scores"), "reg_logits": take("reg_logits")},
            {"boxes": take("boxes"), "labels": take("labels")}, (64, 64))
        return replica_mean(value), scale_for_replicas(value), terms["qfl"], terms["giou"], terms["dfl"]

    out = strategy.run(step)
    print(json.dumps([[float(v) for v in strategy.experimental_local_results(t)] for t in out]))
    """
)


def test_replica_helpers_and_the_loss_normalisers_on_two_replicas(tmp_path):
    import keras_gfocal

    # Outside a strategy: one replica, values unchanged.
    value = tf.constant([2.5, -1.0])
    np.testing.assert_array_equal(replica_mean(value).numpy(), [2.5, -1.0])
    np.testing.assert_array_equal(scale_for_replicas(value).numpy(), [2.5, -1.0])
    # In a strategy's cross-replica context (no replica context at all): unchanged too.
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert tf.distribute.get_replica_context() is None
        np.testing.assert_array_equal(replica_mean(value).numpy(), [2.5, -1.0])
        np.testing.assert_array_equal(scale_for_replicas(value).numpy(), [2.5, -1.0])

    rng = np.random.default_rng(11)
    _, _, counts = make_points(64, 64, strides=(8, 16))
    a = sum(counts)
    batch = {
        "cls_scores": rng.uniform(0.01, 0.9, (2, a, 2)),
        "reg_logits": rng.normal(0.0, 1.5, (2, a, 68)),
        # image 0: two boxes (6 positives, all for the first); image 1: one box (5 positives)
        "boxes": np.array(
            [[[4.0, 6.0, 50.0, 44.0], [30.0, 20.0, 62.0, 60.0]], [[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 0.0, 0.0]]]
        ),
        "labels": np.array([[0, 1], [1, -1]]),
    }
    root = os.path.dirname(os.path.dirname(keras_gfocal.__file__))  # the package under test (or its mutant)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    (tmp_path / "batch.json").write_text(json.dumps({k: v.tolist() for k, v in batch.items()}))
    run = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS, str(tmp_path / "batch.json")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    means, scaled, qfl, giou, dfl = json.loads(run.stdout.strip().splitlines()[-1])
    assert means == [3.0, 3.0] and scaled == [0.5, 2.5]
    # Each replica's terms: its own sums over the global normalisers (replica means).
    per = [
        ref.gfocal_loss(
            batch["cls_scores"][i : i + 1],
            batch["reg_logits"][i : i + 1],
            batch["boxes"][i : i + 1],
            batch["labels"][i : i + 1],
            (64, 64),
            strides=(8, 16),
            return_details=True,
        )
        for i in range(2)
    ]
    num_pos = max(np.mean([max(p["positives"][0], 1) for p in per]), 1.0)
    w_sum = np.mean([p["weight_sum"] for p in per])
    assert [p["positives"] for p in per] == [[6], [5]]
    for i, p in enumerate(per):
        np.testing.assert_allclose(qfl[i], p["qfl_sum"] / num_pos, rtol=2e-5)
        np.testing.assert_allclose(giou[i], 2.0 * p["giou"] * p["weight_sum"] / 2.0 / w_sum, rtol=2e-5)
        np.testing.assert_allclose(dfl[i], p["dfl"] * p["weight_sum"] / w_sum, rtol=2e-5)


# ------------------------------------------------------------------ the loss terms on small batches

SMALL_CANVAS = (64, 64)
SMALL_STRIDES = (8, 16)  # 64 + 16 points
SMALL_BOXES = np.array(
    [[[4.0, 6.0, 50.0, 44.0], [30.0, 20.0, 62.0, 60.0]], [[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 0.0, 0.0]]], np.float32
)
SMALL_LABELS = np.array([[0, 1], [1, -1]], np.int32)


def _small_outputs(seed, reg_max=16, v1=False):
    rng = np.random.default_rng(seed)
    a = sum(make_points(*SMALL_CANVAS, strides=SMALL_STRIDES)[2])
    reg = rng.normal(0.0, 1.5, (2, a, 4 * (reg_max + 1))).astype(np.float32)
    if not v1:
        return {"cls_scores": rng.uniform(0.001, 0.9, (2, a, 2)).astype(np.float32), "reg_logits": reg}
    logits = rng.normal(-1.0, 2.0, (2, a, 2)).astype(np.float32)
    # Saturated logits: sigmoid(30) is 1.0 in float32, so only a loss computed on the logits stays
    # finite-and-exact there (BCE(30, 0) = 30); on the probabilities it would hit the log's clamp.
    logits[:, ::7, 0] = 30.0
    logits[:, 3::11, 1] = -30.0
    scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    return {"cls_scores": scores, "reg_logits": reg, "cls_logits": logits}


def _keras_loss(outputs, config=None, boxes=SMALL_BOXES, labels=SMALL_LABELS):
    """``GFocalLoss(2, strides=SMALL_STRIDES, **config)`` on NumPy outputs and targets -> its terms."""
    return GFocalLoss(2, strides=SMALL_STRIDES, **(config or {}))(
        {k: tf.constant(v) for k, v in outputs.items()},
        {"boxes": tf.constant(boxes), "labels": tf.constant(labels)},
        SMALL_CANVAS,
    )


def _numpy_loss(outputs, config=None):
    """tests/numpy_reference.py's loss table on ``SMALL_BOXES`` for the ``GFocalLoss`` arguments ``config``."""
    config = config or {}
    return ref.gfocal_loss(
        outputs["cls_scores"],
        outputs["reg_logits"],
        SMALL_BOXES,
        SMALL_LABELS,
        SMALL_CANVAS,
        cls_logits=outputs.get("cls_logits"),
        strides=SMALL_STRIDES,
        reg_max=config.get("reg_max", 16),
        topk=config.get("atss_topk", 9),
        beta=config.get("qfl_beta", 2.0),
        weights=(config.get("qfl_weight", 1.0), config.get("giou_weight", 2.0), config.get("dfl_weight", 0.25)),
        return_details=True,
    )


def _assert_terms_equal(got, expected):
    for key in ("qfl", "giou", "dfl"):
        assert got[key].dtype == tf.float32 and got[key].shape == ()
        np.testing.assert_allclose(float(got[key]), expected[key], rtol=2e-5, err_msg=key)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"reg_max": 7, "atss_topk": 3},
        {"qfl_beta": 1.5, "qfl_weight": 0.5, "giou_weight": 3.0, "dfl_weight": 1.5},
        {"v1": True},
    ],
    ids=["defaults", "reg_max_7_topk_3", "beta_and_weights", "v1_saturated_logits"],
)
def test_loss_terms_against_the_numpy_loss_table(config):
    config = dict(config)
    v1 = config.pop("v1", False)
    outputs = _small_outputs(5, config.get("reg_max", 16), v1)
    expected = _numpy_loss(outputs, config)
    assert sum(expected["positives"]) > 0
    _assert_terms_equal(_keras_loss(outputs, config), expected)


def test_a_single_image_without_boxes_divides_qfl_by_one_and_has_no_box_terms():
    outputs = _small_outputs(6)
    outputs = {k: v[:1] for k, v in outputs.items()}
    got = _keras_loss(outputs, boxes=np.zeros((1, 2, 4), np.float32), labels=-np.ones((1, 2), np.int32))
    # every point a negative: QFL = sum_c BCE(J, 0) J^2 over all points, divided by the floor 1
    j = outputs["cls_scores"].astype(np.float64)
    qfl_sum = float(np.sum(-np.log(1.0 - j) * j**2))
    np.testing.assert_allclose(float(got["qfl"]), qfl_sum, rtol=2e-5)
    # no positives: the box terms are exactly 0 (the normaliser falls back to 1, no 0 / 0)
    assert float(got["giou"]) == 0.0 and float(got["dfl"]) == 0.0


def test_box_terms_divide_by_a_weight_sum_below_one():
    # Low joint scores: the positives' weights sum to well under 1, and the box terms still
    # divide by that sum (not by a floor of 1).
    outputs = _small_outputs(7)
    outputs["cls_scores"] = (outputs["cls_scores"] * 0.02).astype(np.float32)
    expected = _numpy_loss(outputs)
    assert 0.0 < expected["weight_sum"] < 0.5
    _assert_terms_equal(_keras_loss(outputs), expected)
