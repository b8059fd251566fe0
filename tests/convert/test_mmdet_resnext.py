"""MMDetection's GFL R101 and X101-32x4d checkpoints, full size, through ``convert_checkpoint``.

The key sets and parameter counts are MMDetection 3.3's own (``gfl_r101_fpn_ms-2x_coco`` and
``gfl_x101-32x4d_fpn_ms-2x_coco`` built in PyTorch, ``tests/fixtures/make_resnext_fixtures.py``);
each tensor of the ``.pth`` holds one value of its own (``constant_checkpoint``), so a few KB
stand for 51M parameters and every variable shows which key filled it.
"""

import json

import numpy as np
import pytest
from hostile_files import constant_checkpoint
from reference_weights import load_fixture

from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.convert import convert_checkpoint
from keras_gfocal.convert.mmdet import load_gfocal_weights
from keras_gfocal.presets import PRESETS


def _shapes(name):
    return json.loads(str(load_fixture("mmdet_resnext101_32x4d.npz")[f"gfl_{name}_shapes"]))


def _values_by_variable(model):
    return [np.asarray(v) for v in model.weights]


@pytest.fixture(scope="module")
def x101(tmp_path_factory):
    """``(model, {key: value}, path)``: the X101 preset converted from a constant-valued GFL X101 file."""
    data, values = constant_checkpoint(_shapes("x101"))
    path = tmp_path_factory.mktemp("gfl") / "gfl_x101_32x4d.pth"
    path.write_bytes(data)
    return convert_checkpoint(path, "gfocal_v1_x101_32x4d_fpn"), values, path


def test_every_key_of_gfl_x101_fills_one_variable(x101):
    model, values, _ = x101
    assert model.num_classes == 80 and not model.dgqp
    held = []
    for variable in model.weights:
        array = np.asarray(variable)
        assert np.all(array == array.flat[0]), variable.path
        held.append(float(array.flat[0]))
    used = [v for k, v in values.items() if not k.endswith("num_batches_tracked") and k != "bbox_head.integral.project"]
    assert sorted(held) == sorted(used)
    grouped = model.backbone.stages[3][2].conv2.kernel  # [3, 3, 1024 / 32, 1024]
    assert tuple(grouped.shape) == (3, 3, 32, 1024)
    assert np.all(np.asarray(grouped) == values["backbone.layer4.2.conv2.weight"])


def test_parameter_counts_are_mmdetections(x101):
    counted = sum(int(np.prod(w.shape)) for w in x101[0].weights if "moving" not in w.path)
    fixture = load_fixture("mmdet_resnext101_32x4d.npz")
    assert counted == int(fixture["gfl_x101_params"]) == PRESETS["gfocal_v1_x101_32x4d_fpn"]["parameters"]
    assert int(fixture["gfl_r101_params"]) == PRESETS["gfocal_v1_r101_fpn"]["parameters"]


def test_a_mismatch_is_named_and_assigns_nothing(x101):
    model, values, path = x101
    before = _values_by_variable(model)
    state = {key: np.full(shape, -1.0, np.float32) for key, shape in _shapes("x101")}
    # A plain ResNet-101's conv2 in one block: 64 input channels per kernel instead of 4.
    state["backbone.layer1.1.conv2.weight"] = np.zeros((128, 128, 3, 3), np.float32)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^bad\.pth does not fit the model; shapes that differ: "
        r"backbone\.layer1\.1\.conv2\.weight \(128, 128, 3, 3\) \(model expects \(3, 3, 4, 128\)\)\.$",
    ):
        load_gfocal_weights(model, state, "bad.pth")
    for a, b in zip(before, _values_by_variable(model)):
        np.testing.assert_array_equal(a, b)
    del state["backbone.layer1.1.conv2.weight"]
    with pytest.raises(
        CheckpointMismatchError, match=r"missing from the checkpoint: backbone\.layer1\.1\.conv2\.weight"
    ):
        load_gfocal_weights(model, state, "bad.pth")
    for a, b in zip(before, _values_by_variable(model)):
        np.testing.assert_array_equal(a, b)


def test_an_x101_checkpoint_into_the_r101_preset_names_its_first_key():
    # ResNeXt's bottlenecks are wider inside: 128 channels in layer1 where ResNet-101 has 64.
    state = {key: np.zeros(shape, np.float32) for key, shape in _shapes("x101")}
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^the given state dict does not fit the model; shapes that differ: "
        r"backbone\.layer1\.0\.bn1\.bias \(128,\) \(model expects \(64,\)\), ",
    ):
        convert_checkpoint(state, "gfocal_v1_r101_fpn")


def test_gfl_r101_converts_into_its_preset(tmp_path):
    data, values = constant_checkpoint(_shapes("r101"))
    path = tmp_path / "gfl_r101.pth"
    path.write_bytes(data)
    model = convert_checkpoint(path, "gfocal_v1_r101_fpn")
    counted = sum(int(np.prod(w.shape)) for w in model.weights if "moving" not in w.path)
    assert counted == PRESETS["gfocal_v1_r101_fpn"]["parameters"]
    assert [len(stage) for stage in model.backbone.stages] == [3, 4, 23, 3]
    assert np.all(np.asarray(model.backbone.stages[2][22].conv2.kernel) == values["backbone.layer3.22.conv2.weight"])
