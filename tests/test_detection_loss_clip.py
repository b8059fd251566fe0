"""The DFL target clip at reg_max - 0.1 (REFERENCE.md's loss table), on a box whose edges lie
more than reg_max strides from its positive points: one level of stride 8, a 300-pixel box, so
every distance (about 150 / 8 = 18.75 bins) is clipped. Expected values: tests/numpy_reference.py."""

import numpy as np
import numpy_reference as ref
import tensorflow as tf

from keras_gfocal.boxes import make_points
from keras_gfocal.detection_loss import GFocalLoss

CANVAS = (320, 320)
STRIDES = (8,)


def test_dfl_targets_beyond_reg_max_are_clipped():
    rng = np.random.default_rng(7)
    _, _, counts = make_points(*CANVAS, strides=STRIDES)
    a = sum(counts)
    outputs = {
        "cls_scores": rng.uniform(0.001, 0.6, (1, a, 2)).astype(np.float32),
        "reg_logits": rng.normal(0.0, 1.5, (1, a, 68)).astype(np.float32),
    }
    boxes = np.array([[[10.0, 10.0, 310.0, 310.0]]], np.float32)
    labels = np.array([[1]], np.int32)
    expected = ref.gfocal_loss(
        outputs["cls_scores"], outputs["reg_logits"], boxes, labels, CANVAS, strides=STRIDES, return_details=True
    )
    assert expected["positives"][0] > 0
    got = GFocalLoss(2, strides=STRIDES)(
        {k: tf.constant(v) for k, v in outputs.items()},
        {"boxes": tf.constant(boxes), "labels": tf.constant(labels)},
        CANVAS,
    )
    for key in ("qfl", "giou", "dfl"):
        np.testing.assert_allclose(float(got[key]), expected[key], rtol=2e-5, err_msg=key)
