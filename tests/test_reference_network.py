"""The whole network equals the reference on the same weights.

The fixtures in tests/fixtures/ hold outputs of the real PyTorch reference
modules (torchvision's ResNet-50; MMDetection 3.3's ResNet + FPN + GFL head,
with the official GFocalV2 quality branch on top), computed once by
tests/fixtures/make_reference_fixtures.py with every tensor of their state dict
drawn by ``reference_weights.seeded_state_dict``. Here the same state dicts go
through this package's converters, and the Keras outputs must match.
"""

import numpy as np
import pytest
from reference_weights import fixture_state_dict, load_fixture

from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.convert import convert_checkpoint
from keras_gfocal.layers import ResNetBackbone
from keras_gfocal.pretrained import load_resnet_weights

RTOL = 1e-4


def _relative_error(actual, expected):
    """Largest absolute difference over the largest magnitude of the reference."""
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def _levels(array, level_sizes):
    """Splits ``[1, A, C]`` into the five levels' rows."""
    bounds = np.cumsum([0] + [int(h * w) for h, w in level_sizes])
    return [array[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def test_torchvision_resnet50_gives_the_reference_c3_c4_c5():
    fixture = load_fixture("torchvision_resnet50.npz")
    backbone = ResNetBackbone(50)
    load_resnet_weights(backbone, fixture_state_dict(fixture))  # torchvision names, fc.* ignored
    outputs = backbone(fixture["image"])
    for name, actual in zip(("c3", "c4", "c5"), outputs):
        assert actual.shape == fixture[name].shape, name
        assert _relative_error(actual, fixture[name]) <= RTOL, name


@pytest.mark.parametrize(
    "preset, fixture_name, drop_background",
    [
        ("gfocal_v2_r50_fpn", "gfocal_v2_r50_reference.npz", True),
        ("gfocal_v1_r50_fpn", "gfocal_v1_r50_reference.npz", False),
    ],
)
def test_converted_checkpoint_gives_the_reference_outputs_at_every_level(preset, fixture_name, drop_background):
    fixture = load_fixture(fixture_name)
    model = convert_checkpoint(fixture_state_dict(fixture), preset)
    assert model.num_classes == 80 and model.class_names[0] == "person" and model.category_ids[-1] == 90
    out = model(fixture["image"])
    expected_cls = fixture["cls"][..., :80]  # the official V2 models' 81st channel is the background
    assert fixture["cls"].shape[-1] == (81 if drop_background else 80)
    actual_cls = out["cls_scores"] if model.dgqp else out["cls_logits"]  # V1: the reference returns logits
    sizes = fixture["level_sizes"]
    for level, (a, e) in enumerate(zip(_levels(np.asarray(actual_cls), sizes), _levels(expected_cls, sizes))):
        assert a.shape == e.shape
        assert _relative_error(a, e) <= RTOL, f"cls P{level + 3}"
    for level, (a, e) in enumerate(zip(_levels(np.asarray(out["reg_logits"]), sizes), _levels(fixture["reg"], sizes))):
        assert _relative_error(a, e) <= RTOL, f"reg P{level + 3}"


def test_a_checkpoint_that_does_not_fit_names_the_keys():
    fixture = load_fixture("gfocal_v1_r50_reference.npz")
    state_dict = fixture_state_dict(fixture)
    # A V1 checkpoint into the V2 preset: the quality branch is missing.
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: bbox_head\.reg_conf\.0\.bias"):
        convert_checkpoint(state_dict, "gfocal_v2_r50_fpn", num_classes=80)
    # ResNet-101 keys into the R50 preset: extra stages named.
    extra = dict(state_dict, **{"backbone.layer3.6.conv1.weight": np.zeros((256, 1024, 1, 1), "float32")})
    with pytest.raises(CheckpointMismatchError, match=r"not used by the model: backbone\.layer3\.6\.conv1\.weight"):
        convert_checkpoint(extra, "gfocal_v1_r50_fpn")
    wrong = dict(state_dict, **{"neck.fpn_convs.3.conv.weight": np.zeros((256, 256, 1, 1), "float32")})
    with pytest.raises(CheckpointMismatchError, match=r"shapes that differ: neck\.fpn_convs\.3\.conv\.weight"):
        convert_checkpoint(wrong, "gfocal_v1_r50_fpn")
    dcn = dict(state_dict, **{"backbone.layer2.0.conv2.conv_offset.weight": np.zeros((18, 128, 3, 3), "float32")})
    with pytest.raises(
        CheckpointMismatchError, match=r"not used by the model: backbone\.layer2\.0\.conv2\.conv_offset\.weight\.$"
    ):
        convert_checkpoint(dcn, "gfocal_v1_r50_fpn")
