"""Deformable-conv (DCN) checkpoints: the official GFocalV2 R101-DCN layout converts at full size,
and a DCN checkpoint and a preset that disagree on DCN are refused, naming the offset convs.

The key list is the R101-DCN detectors' state dicts as MMDetection 3.3's modules build them
(``tests/fixtures/make_resnet_dcn_fixtures.py``), with their PyTorch parameter counts.
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
    # Every variable holds one key's value, and every key but the step counters and the
    # projection buffer filled one: nothing in the checkpoint is left over.
    held = []
    for variable in model.weights:
        array = np.asarray(variable)
        assert np.all(array == array.flat[0]), variable.path
        held.append(float(array.flat[0]))
    used = [v for k, v in values.items() if not k.endswith(("num_batches_tracked", "integral.project"))]
    assert sorted(held) == sorted(used)
    reference = int(fixture["v2_parameters"])
    assert reference == PRESETS["gfocal_v2_r101_dcn_fpn"]["parameters"] == 52_722_551
    assert _parameters(model) == reference - BACKGROUND_CHANNEL


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
    model = convert_checkpoint(v1_dcn, "gfocal_v1_r101_dcn_fpn")
    assert not model.dgqp and _parameters(model) == int(fixture["v1_parameters"]) == 52_718_837
    assert PRESETS["gfocal_v1_r101_dcn_fpn"]["parameters"] == 52_718_837
