"""Training equals the reference's, step for step.

The fixtures ``gfocal_v{1,2}_r50_training.npz`` hold 12 training steps of the real reference,
computed once by ``tests/fixtures/make_reference_fixtures.py --only train`` (PyTorch +
MMDetection 3.3; V2 with the official GFocalV2 quality branch, background channel and loss):
the GFL R50-FPN detector with a 64-wide FPN and head (GroupNorm of 8 groups, 8 channels each as
the reference's 256 / 32), seeded weights (``reference_weights.seeded_state_dict``), one fixed
batch of two images (one with four boxes, one smaller image with one box, padded),
``torch.optim.SGD(momentum=0.9, weight_decay=1e-4)`` at the official warm-up rate
``0.01 * (1 - (1 - t / 500) * 0.999)``, BatchNorm in eval mode, stem and layer1 frozen. They
record each step's loss parts and, for every parameter the reference trained, its total update
``w_K - w_0`` at 256 seeded entries and the update's L2 norm over the whole tensor.

Here the same state dict goes through the checkpoint converter into a ``GFocalDetector``, which
trains on the same batch with ``train_on_batch``, ``reference_optimizer`` and the reference
schedule, and must take the same steps.
"""

import json

import numpy as np
import pytest
from reference_weights import fixture_state_dict, load_fixture

from keras_gfocal import GFocalDetector
from keras_gfocal.convert.mmdet import gfocal_rows, load_gfocal_weights
from keras_gfocal.schedules import WarmupStepDecay, reference_optimizer

#: Each step's QFL, GIoU and DFL within this of the reference's, relative (measured: 4e-6 V1, 1e-5 V2).
LOSS_RTOL = 1e-4
#: Per trained tensor, |update - reference update| / |reference update| over its sampled entries:
#: the median over tensors and the largest (measured: 1.8e-4 and 1.9e-3 V1, 2.3e-4 and 2.3e-3 V2).
UPDATE_MEDIAN_RTOL = 1e-3
UPDATE_MAX_RTOL = 1e-2
#: An update "resolves" in float32 when its median entry spans this many units in the last
#: place (ulp) of its weight. Below that (the per-level scales, which move by 6 to 9 ulp in 12
#: warm-up steps) each entry must instead agree to the rounding level: one ulp a step.
RESOLVED_ULPS = 10


def _train_like_the_reference(fixture):
    """The converted model, the state dict, its variables before training (by ``id``) and each
    step's ``[qfl, giou, dfl]``."""
    config = json.loads(str(fixture["config"]))
    state = fixture_state_dict(fixture)
    model = GFocalDetector.from_preset(
        f"gfocal_v{config['version']}_r50_fpn",
        num_classes=config["num_classes"],  # V2: the official background channel is a class without boxes
        backbone_weights=None,
        fpn_channels=config["channels"],
        head_channels=config["channels"],
        groups=config["groups"],
    )
    model.build((None,) + fixture["images"].shape[1:])
    load_gfocal_weights(model, state, "the training fixture")
    before = {id(v): np.array(v.numpy()) for v in model.variables}
    schedule = WarmupStepDecay(config["base_lr"], [], warmup_steps=config["warmup"], warmup_ratio=config["ratio"])
    model.compile(optimizer=reference_optimizer(schedule, config["momentum"], config["weight_decay"]))
    targets = {"boxes": fixture["boxes"], "labels": fixture["labels"], "image_size": fixture["image_size"]}
    losses = []
    for _ in range(config["steps"]):
        logs = model.train_on_batch(fixture["images"], targets, return_dict=True)
        losses.append([float(logs[k]) for k in ("qfl", "giou", "dfl")])
    return model, state, before, np.array(losses)


def _update_errors(model, state, before, fixture):
    """Per trained tensor: ``(relative error of its sampled entries, their median update in
    ulps, their largest error in ulps per step, relative error of the whole update's norm)``."""
    steps = json.loads(str(fixture["config"]))["steps"]
    trained = json.loads(str(fixture["trainable"]))
    norms = dict(zip(trained, fixture["delta_norms"]))
    errors = {}
    for key, variable, transform in gfocal_rows(model):
        if key not in norms:
            continue
        shape = state[key].shape
        # Where each Keras entry comes from in the torch tensor: the converter's own transform.
        origin = np.arange(int(np.prod(shape))).reshape(shape)
        origin = (origin if transform is None else transform(origin)).reshape(-1)
        after = np.asarray(variable.numpy(), np.float64).reshape(-1)
        delta = np.empty(origin.size)
        delta[origin] = after - before[id(variable)].reshape(-1)
        final = np.empty(origin.size)
        final[origin] = after
        index = fixture[f"index/{key}"]
        expected = fixture[f"delta/{key}"]
        ulp = np.spacing(np.maximum(np.abs(state[key].reshape(-1)[index]), np.abs(final[index])).astype(np.float32))
        difference = np.abs(delta[index] - expected)
        errors[key] = (
            float(np.linalg.norm(difference) / max(np.linalg.norm(expected), 1e-30)),
            float(np.median(np.abs(expected) / ulp)),
            float(np.max(difference / ulp) / steps),
            float(abs(np.linalg.norm(delta) - norms[key]) / max(norms[key], 1e-30)),
        )
    return errors


@pytest.fixture(scope="module", params=[1, 2], ids=["v1", "v2"])
def reference_run(request):
    fixture = load_fixture(f"gfocal_v{request.param}_r50_training.npz")
    return (fixture, *_train_like_the_reference(fixture))


def test_each_step_has_the_reference_losses(reference_run):
    fixture, _, _, _, losses = reference_run
    relative = np.abs(losses - fixture["losses"]) / np.abs(fixture["losses"])
    assert relative.max() <= LOSS_RTOL, relative


def test_the_same_weights_train_and_every_other_stays_as_it_was(reference_run):
    fixture, model, _, before, _ = reference_run
    trainable = {id(v) for v in model.trainable_variables}
    keras_trained = sorted(key for key, variable, _ in gfocal_rows(model) if id(variable) in trainable)
    assert keras_trained == sorted(json.loads(str(fixture["trainable"])))
    assert len(trainable) == len(keras_trained)  # no trainable variable outside the checkpoint
    for variable in model.non_trainable_variables:  # stem, layer1, every BatchNorm statistic
        np.testing.assert_array_equal(variable.numpy(), before[id(variable)], err_msg=variable.path)


def test_every_trained_weight_takes_the_reference_update(reference_run):
    fixture, model, state, before, _ = reference_run
    errors = _update_errors(model, state, before, fixture)
    resolved = {k: e for k, e in errors.items() if e[1] >= RESOLVED_ULPS}
    unresolved = {k: e for k, e in errors.items() if e[1] < RESOLVED_ULPS}
    assert len(resolved) >= 0.95 * len(errors), f"only {len(resolved)} of {len(errors)} updates resolve"
    relative = np.array([e[0] for e in resolved.values()])
    worst = max(resolved, key=lambda k: resolved[k][0])
    assert np.median(relative) <= UPDATE_MEDIAN_RTOL, np.median(relative)
    assert relative.max() <= UPDATE_MAX_RTOL, (worst, resolved[worst])
    norm_errors = np.array([e[3] for e in resolved.values()])
    assert norm_errors.max() <= UPDATE_MAX_RTOL, norm_errors.max()
    for key, (_, _, ulps_per_step, _) in unresolved.items():  # V1: four of the five scales
        assert ulps_per_step <= 1.0, (key, errors[key])
