"""Deformable-conv (DCN) checkpoints: the official GFocalV2 R101-DCN and X101-32x4d-DCN layouts and
MMDetection's GFL X101-32x4d-DCN convert at full size (and the official R101 layout, the R101-DCN's
without its offset convs), and a DCN checkpoint and a preset that disagree on DCN are refused,
naming the offset convs.

The key lists are the detectors' state dicts as MMDetection 3.3's modules build them
(``tests/fixtures/make_resnet_dcn_fixtures.py``, ``make_resnext_dcn_fixtures.py``), with their
PyTorch parameter counts.
"""

import json

import numpy as np
import pytest
from hostile_files import constant_checkpoint
from reference_weights import load_fixture

from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.convert import convert_checkpoint
from keras_gfocal.layers import DeformableConv2D
from keras_gfocal.presets import PRESETS

# The official GFocalV2 head has one classification channel more (the background): a 3x3 conv
# from 256 channels and its bias, which the converter drops.
BACKGROUND_CHANNEL = 256 * 3 * 3 + 1


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("resnet101_dcn_reference.npz")


def _parameters(model):
    """PyTorch's count: every weight but BatchNorm's running statistics (buffers there)."""
    return sum(int(np.prod(w.shape)) for w in model.weights if not w.path.endswith(("moving_mean", "moving_variance")))


def test_a_full_size_official_r101_dcn_checkpoint_fills_every_variable(fixture, tmp_path):
    shapes = json.loads(str(fixture["v2_shapes"]))
    data, values = constant_checkpoint(shapes)
    path = tmp_path / "gfocal_r101_dcn_fpn_ms2x.pth"
    path.write_bytes(data)
    model = convert_checkpoint(path, "gfocal_v2_r101_dcn_fpn")
    assert model.num_classes == 80 and model.dgqp
    deformable = [b for stage in model.backbone.stages for b in stage if isinstance(b.conv2, DeformableConv2D)]
    assert len(deformable) == 4 + 23 + 3
    assert np.all(
        np.asarray(deformable[0].conv2.conv_offset.kernel) == values["backbone.layer2.0.conv2.conv_offset.weight"]
    )
    assert np.all(np.asarray(deformable[-1].conv2.kernel) == values["backbone.layer4.2.conv2.weight"])
    _assert_every_key_fills_one_variable(model, values)
    reference = int(fixture["v2_parameters"])
    assert reference == PRESETS["gfocal_v2_r101_dcn_fpn"]["parameters"] == 52_722_551
    assert _parameters(model) == reference - BACKGROUND_CHANNEL


def test_the_official_r101_layout_without_offset_convs_fills_the_plain_r101_preset(fixture, tmp_path):
    """The official ``gfocal_r101_fpn_ms2x`` layout is the R101-DCN one without its offset convs."""
    shapes = [(k, s) for k, s in json.loads(str(fixture["v2_shapes"])) if ".conv_offset." not in k]
    data, values = constant_checkpoint(shapes)
    path = tmp_path / "gfocal_r101_fpn_ms2x.pth"
    path.write_bytes(data)
    model = convert_checkpoint(path, "gfocal_v2_r101_fpn")
    assert model.num_classes == 80 and model.dgqp and not model.backbone.dcn_stages
    _assert_every_key_fills_one_variable(model, values)
    offsets = sum(int(np.prod(s)) for k, s in json.loads(str(fixture["v2_shapes"])) if ".conv_offset." in k)
    assert PRESETS["gfocal_v2_r101_fpn"]["parameters"] == int(fixture["v2_parameters"]) - offsets
    assert _parameters(model) == PRESETS["gfocal_v2_r101_fpn"]["parameters"] - BACKGROUND_CHANNEL


def _assert_every_key_fills_one_variable(model, values):
    """Every variable holds one key's value, and every key but the step counters and the
    projection buffer filled one: nothing in the checkpoint is left over."""
    held = []
    for variable in model.weights:
        array = np.asarray(variable)
        assert np.all(array == array.flat[0]), variable.path
        held.append(float(array.flat[0]))
    used = [v for k, v in values.items() if not k.endswith(("num_batches_tracked", "integral.project"))]
    assert sorted(held) == sorted(used)


@pytest.mark.parametrize(
    "version, preset", [(2, "gfocal_v2_x101_32x4d_dcn_fpn"), (1, "gfocal_v1_x101_32x4d_dcn_fpn")], ids=["v2", "v1"]
)
def test_full_size_x101_32x4d_dcn_checkpoints_fill_every_variable(version, preset, tmp_path):
    """The official GFocalV2 ``gfocal_x101_dcn_fpn_ms2x`` and MMDetection's
    ``gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco``: DCN in c4-c5 only, grouped as ResNeXt's conv2."""
    fixture = load_fixture("resnext101_dcn_reference.npz")
    data, values = constant_checkpoint(json.loads(str(fixture[f"v{version}_shapes"])))
    path = tmp_path / f"{preset}.pth"
    path.write_bytes(data)
    model = convert_checkpoint(path, preset)
    assert model.num_classes == 80 and model.dgqp == (version == 2)
    stages = model.backbone.stages
    assert not any(isinstance(block.conv2, DeformableConv2D) for stage in stages[:2] for block in stage)
    assert all(isinstance(block.conv2, DeformableConv2D) for stage in stages[2:] for block in stage)
    assert [len(stage) for stage in stages] == [3, 4, 23, 3]
    first, last = stages[2][0].conv2, stages[3][2].conv2
    assert tuple(first.kernel.shape) == (3, 3, 16, 512) and tuple(first.conv_offset.kernel.shape) == (3, 3, 512, 18)
    assert np.all(np.asarray(first.conv_offset.kernel) == values["backbone.layer3.0.conv2.conv_offset.weight"])
    assert np.all(np.asarray(last.kernel) == values["backbone.layer4.2.conv2.weight"])
    _assert_every_key_fills_one_variable(model, values)
    reference = int(fixture[f"v{version}_parameters"])
    assert reference == PRESETS[preset]["parameters"] == (53_470_767 if version == 2 else 53_467_053)
    # The presets state the reference's count, with the official V2 head's background channel.
    assert _parameters(model) == reference - (BACKGROUND_CHANNEL if version == 2 else 0)


def _state_dict(shapes):
    """Zeros of every shape, as read-only broadcast views (no memory for a full-size model)."""
    return {key: np.broadcast_to(np.float32(0.0), shape) for key, shape in shapes}


def test_dcn_and_plain_checkpoints_into_the_other_preset_name_the_offset_convs(fixture):
    v2_dcn = _state_dict(json.loads(str(fixture["v2_shapes"])))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"does not fit the model; not used by the model: backbone\.layer2\.0\.conv2\.conv_offset\.bias, "
        r"backbone\.layer2\.0\.conv2\.conv_offset\.weight, .* \(and 55 more\)\.$",
    ):
        convert_checkpoint(v2_dcn, "gfocal_v2_r101_fpn")
    v1_dcn = _state_dict(json.loads(str(fixture["v1_shapes"])))
    plain = {key: value for key, value in v1_dcn.items() if ".conv_offset." not in key}
    with pytest.raises(
        CheckpointMismatchError,
        match=r"does not fit the model; missing from the checkpoint: backbone\.layer2\.0\.conv2\.conv_offset\.bias, "
        r"backbone\.layer2\.0\.conv2\.conv_offset\.weight, .* \(and 55 more\)\.$",
    ):
        convert_checkpoint(plain, "gfocal_v1_r101_dcn_fpn")
    x101_dcn = _state_dict(json.loads(str(load_fixture("resnext101_dcn_reference.npz")["v1_shapes"])))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"does not fit the model; not used by the model: backbone\.layer3\.0\.conv2\.conv_offset\.bias, "
        r"backbone\.layer3\.0\.conv2\.conv_offset\.weight, .* \(and 47 more\)\.$",
    ):
        convert_checkpoint(x101_dcn, "gfocal_v1_x101_32x4d_fpn")
    model = convert_checkpoint(v1_dcn, "gfocal_v1_r101_dcn_fpn")
    assert not model.dgqp and _parameters(model) == int(fixture["v1_parameters"]) == 52_718_837
    assert PRESETS["gfocal_v1_r101_dcn_fpn"]["parameters"] == 52_718_837
