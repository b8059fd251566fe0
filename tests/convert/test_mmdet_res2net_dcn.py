"""The official GFocalV2 R2-101-DCN checkpoint layout, full size, through ``convert_checkpoint``.

The key set and parameter count are the official detector's as MMDetection 3.3's modules build it
in PyTorch (``gfocal_r2n101_dcn_fpn_ms2x``: Res2Net-101 v1d 26w4s with DCN in c4-c5, the official
head with its background channel; ``tests/fixtures/make_res2net_dcn_fixtures.py``); each tensor of
the ``.pth`` holds one value of its own (``constant_checkpoint``), so a few KB stand for 53M
parameters and every variable shows which key filled it.
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

PRESET = "gfocal_v2_r2n101_dcn_fpn"
# The official head's background channel: a 3x3 conv from 256 channels and its bias, dropped.
BACKGROUND_CHANNEL = 256 * 3 * 3 + 1


@pytest.fixture(scope="module")
def official():
    """The official detector's state-dict ``[key, shape]`` list."""
    return json.loads(str(load_fixture("mmdet_res2net101_dcn.npz")["v2_shapes"]))


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory):
    """``(model, {key: value})``: the preset converted from a constant-valued official file."""
    data, values = constant_checkpoint(official)
    path = tmp_path_factory.mktemp("gfocal") / "gfocal_r2n101_dcn_fpn_ms2x.pth"
    path.write_bytes(data)
    return convert_checkpoint(path, PRESET), values


def _held(model):
    """The one value each variable holds (asserting that it holds only one)."""
    held = []
    for variable in model.weights:
        array = np.asarray(variable)
        assert np.all(array == array.flat[0]), variable.path
        held.append(float(array.flat[0]))
    return held


def test_every_key_of_the_official_r2n101_dcn_file_fills_one_variable(converted):
    model, values = converted
    assert model.num_classes == 80 and model.dgqp
    backbone = model.backbone
    assert backbone.dcn_stages == (3, 4) and not backbone.dcn_modulated
    offset = backbone.stages[2][0].convs[0].conv_offset.kernel  # [3, 3, 104, 18]
    assert tuple(offset.shape) == (3, 3, 104, 18)
    assert np.all(np.asarray(offset) == values["backbone.layer3.0.convs.0.conv_offset.weight"])
    assert np.all(np.asarray(backbone.stages[3][2].convs[2].kernel) == values["backbone.layer4.2.convs.2.weight"])
    # Every key but the step counters and the projection buffer filled a variable: none left over.
    used = [v for k, v in values.items() if not k.endswith(("num_batches_tracked", "integral.project"))]
    assert sorted(_held(model)) == sorted(used)
    assert sum(".conv_offset." in k for k in values) == 2 * 3 * (23 + 3)


def test_the_preset_states_the_reference_parameter_count(converted):
    model, _ = converted
    counted = sum(
        int(np.prod(w.shape)) for w in model.weights if not w.path.endswith(("moving_mean", "moving_variance"))
    )
    v2_parameters = int(load_fixture("mmdet_res2net101_dcn.npz")["v2_parameters"])
    # The preset states the reference's count, as the other V2 presets do: with the background channel.
    assert PRESETS[PRESET]["parameters"] == v2_parameters == 53_580_319
    assert counted == v2_parameters - BACKGROUND_CHANNEL


def test_a_plain_res2net_checkpoint_into_the_dcn_preset_names_the_offset_convs(official, converted):
    model, _ = converted
    before = _held(model)
    plain = {k: np.broadcast_to(np.float32(-1.0), s) for k, s in official if ".conv_offset." not in k}
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^plain\.pth does not fit the model; missing from the checkpoint: "
        r"backbone\.layer3\.0\.convs\.0\.conv_offset\.bias, backbone\.layer3\.0\.convs\.0\.conv_offset\.weight, "
        r".* \(and 151 more\)\.$",
    ):
        load_gfocal_weights(model, plain, "plain.pth", drop_background=True)
    assert _held(model) == before  # all or nothing
