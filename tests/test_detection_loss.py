"""The GFocal training objective (keras_gfocal.detection_loss) against the NumPy loss table.

Dense outputs are made by hand (random joint scores and distribution logits), so the
loss is checked without a network: ATSS with padding points left out, QFL on the joint
score (beta 2) or on logits (V1), GIoU x 2 and DFL x 0.25 / 4 in stride units with the
sum-of-weights normaliser, and the positives count with its floor of 1 per image.
Expected values come from tests/numpy_reference.py (written from REFERENCE.md).
"""

import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf

from keras_gfocal.boxes import make_points
from keras_gfocal.detection_loss import GFocalLoss, validate_targets

CANVAS = (64, 96)
NUM_CLASSES = 3
# Image 0: resized to 40 x 60, padded to 64 x 64 (P3 columns 8-11 lie over padding);
# image 1: no boxes, resized to 30 x 90, padded to 32 x 96 (P3 rows 4-7 over padding).
# The box filling image 0 gets two positives fewer than it would if the padding points
# of P4-P7 were ATSS candidates (they lower its IoU threshold).
IMAGE_SIZE = np.array([[40, 60], [30, 90]], np.int32)
BOXES = np.array(
    [
        [[4.0, 6.0, 30.0, 34.0], [22.5, 10.0, 58.0, 39.0], [0.0, 0.0, 60.0, 40.0]],
        [[0.0, 0.0, 0.0, 0.0]] * 3,
    ],
    np.float32,
)
LABELS = np.array([[0, 2, 1], [-1, -1, -1]], np.int32)


def _dense_outputs(seed=0, logits=False):
    rng = np.random.default_rng(seed)
    _, _, counts = make_points(*CANVAS)
    num_points = sum(counts)
    reg = rng.normal(0.0, 1.5, (2, num_points, 68)).astype(np.float32)
    if logits:
        cls_logits = rng.normal(-2.0, 1.5, (2, num_points, NUM_CLASSES)).astype(np.float32)
        scores = (1.0 / (1.0 + np.exp(-cls_logits.astype(np.float64)))).astype(np.float32)
        return {"cls_scores": scores, "reg_logits": reg, "cls_logits": cls_logits}
    scores = rng.uniform(0.001, 0.6, (2, num_points, NUM_CLASSES)).astype(np.float32)
    return {"cls_scores": scores, "reg_logits": reg}


def _package(outputs, targets):
    terms = GFocalLoss(NUM_CLASSES)(
        {k: tf.constant(v) for k, v in outputs.items()}, {k: tf.constant(v) for k, v in targets.items()}, CANVAS
    )
    return {k: float(v) for k, v in terms.items()}


def _expected(outputs, image_size, **kw):
    return ref.gfocal_loss(
        outputs["cls_scores"],
        outputs["reg_logits"],
        BOXES,
        LABELS,
        CANVAS,
        image_size,
        cls_logits=outputs.get("cls_logits"),
        return_details=True,
        **kw,
    )


@pytest.mark.parametrize("v1", [False, True], ids=["gfocal_v2_joint_score", "gfocal_v1_logits"])
def test_whole_loss_matches_the_numpy_loss_table(v1):
    outputs = _dense_outputs(seed=1, logits=v1)
    targets = {"boxes": BOXES, "labels": LABELS, "image_size": IMAGE_SIZE}
    expected = _expected(outputs, IMAGE_SIZE)
    assert expected["positives"][0] >= 6 and expected["positives"][1] == 0
    got = _package(outputs, targets)
    for key in ("qfl", "giou", "dfl"):
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-5, err_msg=key)
    # The padding matters here: counting every point gives a different loss.
    everything = _expected(outputs, None)
    assert abs(everything["qfl"] - expected["qfl"]) > 1e-3 * expected["qfl"]


def test_without_image_size_every_point_counts():
    outputs = _dense_outputs(seed=2)
    got = _package(outputs, {"boxes": BOXES, "labels": LABELS})
    expected = _expected(outputs, None)
    for key in ("qfl", "giou", "dfl"):
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-5, err_msg=key)


def test_qfl_normaliser_has_a_floor_of_one_per_image():
    # One image with n positives, one without any: QFL is divided by n + 1, not n.
    outputs = _dense_outputs(seed=3)
    targets = {"boxes": BOXES, "labels": LABELS, "image_size": IMAGE_SIZE}
    details = _expected(outputs, IMAGE_SIZE)
    n = details["positives"][0]
    assert n > 0 and details["positives"][1] == 0
    got = _package(outputs, targets)
    np.testing.assert_allclose(got["qfl"], details["qfl_sum"] / (n + 1), rtol=2e-5)
    assert abs(got["qfl"] - details["qfl_sum"] / n) > 0.02 * got["qfl"]  # 1 / (n + 1) vs 1 / n, n = 21


def test_padding_points_add_no_qfl():
    # Only the scores of padding points change: the loss stays the same.
    outputs = _dense_outputs(seed=4)
    targets = {"boxes": BOXES, "labels": LABELS, "image_size": IMAGE_SIZE}
    points, _, counts = make_points(*CANVAS)
    valid = np.stack([ref.valid_points(*CANVAS, tuple(s)) for s in IMAGE_SIZE])
    assert (~valid).sum() > 100
    changed = {k: v.copy() for k, v in outputs.items()}
    changed["cls_scores"][~valid] = 0.99
    before, after = _package(outputs, targets), _package(changed, targets)
    for key in ("qfl", "giou", "dfl"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6, err_msg=key)


def test_targets_are_checked():
    with pytest.raises(ValueError, match="image_size"):
        validate_targets(BOXES, LABELS, NUM_CLASSES, image_size=np.array([40, 60]))
    with pytest.raises(ValueError, match="below 1"):
        validate_targets(BOXES, LABELS, NUM_CLASSES, image_size=np.array([[40, 60], [0, 60]]))
    validate_targets(BOXES, LABELS, NUM_CLASSES, image_size=IMAGE_SIZE)
    # Inside a graph: an image size larger than the input is an error.
    outputs = _dense_outputs(seed=5)
    bad = {"boxes": BOXES, "labels": LABELS, "image_size": np.array([[40, 60], [30, 120]], np.int32)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_size"):
        GFocalLoss(NUM_CLASSES)(outputs, bad, CANVAS)


def test_detector_compute_loss_is_the_objective_and_fit_takes_image_size():
    from keras_gfocal import GFocalDetector

    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=NUM_CLASSES)
    # Eager, so the test stays fast; the graph path is what the training tests run.
    model.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    images = np.random.default_rng(0).normal(0, 1, (2, *CANVAS, 3)).astype(np.float32)
    y = {"boxes": BOXES, "labels": LABELS, "image_size": IMAGE_SIZE}
    logs = {k: v[0] for k, v in model.fit(images, y, batch_size=2, epochs=1, verbose=0).history.items()}
    outputs = {k: np.asarray(v) for k, v in model(images).items()}  # learning rate 0: same weights
    expected = _package(outputs, y)
    for key in ("qfl", "giou", "dfl"):
        np.testing.assert_allclose(logs[key], expected[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(logs["loss"], sum(expected.values()), rtol=1e-4)
