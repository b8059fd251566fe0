"""Training under ``mixed_bfloat16`` and ``mixed_float16`` (``gfocal train --mixed-precision``).

The tiny GFocalV2 model is trained a few steps on one synthetic batch under
each policy, from the same weights as a float32 model trained the same way,
and the two runs are compared. Under ``mixed_float16`` Keras wraps the
optimizer in a ``LossScaleOptimizer``; a forced overflow must be skipped.
"""

import keras
import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.detection_loss import GFocalLoss
from keras_gfocal.optimizers import TorchSGD
from keras_gfocal.schedules import reference_optimizer

SIZE = 64
STEPS = 3
RATE = 0.01  # constant: the reference's base rate
TERMS = ("qfl", "giou", "dfl")


def _batch():
    """Two 64x64 images with bright rectangles (the channel lit is the class); three boxes, one padding row."""
    rng = np.random.default_rng(0)
    images = rng.normal(0.0, 0.3, (2, SIZE, SIZE, 3)).astype("float32")
    boxes = np.array([[[8, 8, 40, 44], [30, 20, 60, 56]], [[4, 10, 50, 40], [0, 0, 0, 0]]], "float32")
    labels = np.array([[0, 1], [1, -1]], "int32")
    for i, j in zip(*np.nonzero(labels >= 0)):
        x1, y1, x2, y2 = boxes[i, j].astype(int)
        images[i, y1:y2, x1:x2, labels[i, j]] += 2.0
    targets = {"boxes": boxes, "labels": labels, "image_size": np.full((2, 2), SIZE, "int32")}
    return images, targets


IMAGES, TARGETS = _batch()


def _model(weights):
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, backbone_weights=None)
    model.build(IMAGES.shape)
    model.set_weights(weights)
    model.compile(optimizer=reference_optimizer(RATE))
    return model


def _train(model, steps=STEPS):
    """Per-step logs of ``steps`` steps on the batch: ``{"loss": [steps], "qfl": ..., ...}``."""
    logs = [model.train_on_batch(IMAGES, TARGETS, return_dict=True) for _ in range(steps)]
    return {key: np.array([log[key] for log in logs]) for key in ("loss",) + TERMS}


def _sgd(model):
    """The ``TorchSGD`` that updates the weights (inside the ``LossScaleOptimizer`` under float16)."""
    return getattr(model.optimizer, "inner_optimizer", model.optimizer)


@pytest.fixture
def set_policy():
    """Sets the global dtype policy a test asks for, and float32 again afterwards."""
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def float32_run():
    """Initial weights of a seeded tiny model and its float32 losses over ``STEPS`` steps."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, backbone_weights=None)
    model.build(IMAGES.shape)
    weights = model.get_weights()
    model = _model(weights)
    return weights, _train(model)


@pytest.mark.parametrize("policy, compute_dtype", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_precision_trains_as_float32(set_policy, float32_run, policy, compute_dtype):
    weights, expected = float32_run
    set_policy(policy)
    model = _model(weights)
    assert model.dtype_policy.name == policy
    # Loss scaling only for float16: bfloat16 has float32's exponent range.
    wrapped = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert wrapped == (policy == "mixed_float16")
    assert isinstance(_sgd(model), TorchSGD)

    # The network really runs in the low precision ...
    assert all(feature.dtype == compute_dtype for feature in model.backbone(IMAGES))
    # ... but the dense outputs (head output layers, joint score) and the loss terms are float32.
    outputs = model(IMAGES)
    assert outputs["cls_scores"].dtype == "float32"
    assert outputs["reg_logits"].dtype == "float32"
    terms = GFocalLoss(model.num_classes, strides=model.strides, reg_max=model.reg_max)(outputs, TARGETS, (SIZE, SIZE))
    for key in TERMS:
        assert terms[key].dtype == "float32", key
        assert np.isfinite(terms[key].numpy()), key

    got = _train(model)
    for key, values in got.items():
        assert np.all(np.isfinite(values)), (key, values)
    # Measured over the 3 steps (x86 CPU with AMX-BF16), largest relative difference from float32:
    # bfloat16 8.4e-5 on the total loss, 5.8e-4 on a term (qfl), 0.16 % on the loss's drop over the
    # steps; float16 2.2e-5, 6.0e-4 (qfl) and 0.05 %. The bounds leave a margin of 10x or more.
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=0.005)
    for key in TERMS:
        np.testing.assert_allclose(got[key], expected[key], rtol=0.01, err_msg=key)
    drop, expected_drop = got["loss"][0] - got["loss"][-1], expected["loss"][0] - expected["loss"][-1]
    assert expected_drop > 0.02, expected["loss"]
    assert abs(drop / expected_drop - 1) < 0.02, (got["loss"], expected["loss"])

    # The variables, and the optimizer's momentum buffers, stay float32.
    assert {v.dtype for v in model.weights} == {"float32"}
    assert {v.dtype for v in _sgd(model).velocities} == {"float32"}
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_float16_overflow_step_is_skipped_and_the_scale_lowered(set_policy, float32_run):
    weights, _ = float32_run
    set_policy("mixed_float16")
    model = _model(weights)
    scaler = model.optimizer
    assert isinstance(scaler, keras.optimizers.LossScaleOptimizer)
    sgd = scaler.inner_optimizer
    assert isinstance(sgd, TorchSGD)
    initial_scale = scaler.initial_scale  # Keras' 2 ** 15

    # A normal step: gradients fit float16 at the initial scale, the weights move.
    first = _train(model, steps=1)
    assert np.isfinite(first["loss"][0])
    assert float(scaler.dynamic_scale.numpy()) == initial_scale
    assert int(sgd.iterations.numpy()) == 1

    # A loss scale of 2 ** 40 overflows the float16 gradients: the step is skipped.
    before = model.get_weights()
    velocities = [v.numpy() for v in sgd.velocities]
    scaler.dynamic_scale.assign(2.0**40)
    overflow = _train(model, steps=1)
    assert np.isfinite(overflow["loss"][0])  # the logged loss is the unscaled one
    for after, start in zip(model.get_weights(), before):
        np.testing.assert_array_equal(after, start)
    for velocity, start in zip(sgd.velocities, velocities):
        np.testing.assert_array_equal(velocity.numpy(), start)
    assert int(sgd.iterations.numpy()) == 1  # the schedule does not advance either
    assert float(scaler.dynamic_scale.numpy()) == 2.0**39  # halved
    assert int(scaler.step_counter.numpy()) == 0  # growth counting starts again
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())

    # Back at a scale whose gradients fit, the next step trains again, from the same weights.
    scaler.dynamic_scale.assign(initial_scale)
    again = _train(model, steps=1)
    np.testing.assert_allclose(again["loss"], overflow["loss"], rtol=1e-5)
    moved = [not np.array_equal(after, start) for after, start in zip(model.get_weights(), before)]
    assert all(moved), f"{moved.count(False)} of {len(moved)} weights did not move"
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert int(sgd.iterations.numpy()) == 2
    assert float(scaler.dynamic_scale.numpy()) == initial_scale
