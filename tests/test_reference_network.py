"""The whole network equals the reference on the same weights.

The fixtures in tests/fixtures/ hold outputs of the real PyTorch reference
modules (torchvision's ResNet-50; MMDetection 3.3's ResNet + FPN + GFL head,
with the official GFocalV2 quality branch on top; MMDetection's ResNet-101 with
DCN in c3-c5 and ResNeXt-101 32x4d with DCN in c4-c5, and narrow DCN detectors
on them), computed once by tests/fixtures/make_reference_fixtures.py (and
make_resnet_dcn_fixtures.py, make_resnext_dcn_fixtures.py) with every tensor of
their state dict drawn by ``reference_weights.seeded_state_dict``, the DCN
offset convs' weights scaled so that the offsets are about a pixel. Here the
same state dicts go through this package's converters, and the Keras outputs
must match.
"""

import json

import numpy as np
import pytest
from reference_weights import fixture_state_dict, load_fixture, seeded_state_dict

from keras_gfocal import GFocalDetector
from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.convert import convert_checkpoint
from keras_gfocal.convert.mmdet import load_gfocal_weights
from keras_gfocal.layers import DeformableConv2D, ResNetBackbone, ResNeXtBackbone
from keras_gfocal.pretrained import load_backbone_weights, load_resnet_weights

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


def _offsets_scaled(state_dict, fixture):
    """The offset convs' seeded weights, scaled as the generator scaled them: offsets of about a pixel."""
    return {
        key: value * fixture["offset_scale"] if key.endswith(".conv_offset.weight") else value
        for key, value in state_dict.items()
    }


def test_mmdet_resnet101_with_dcn_in_c3_c5_gives_the_reference_c3_c4_c5():
    fixture = load_fixture("resnet101_dcn_reference.npz")
    state_dict = _offsets_scaled(fixture_state_dict(fixture), fixture)
    assert sum(key.endswith("conv2.conv_offset.weight") for key in state_dict) == 4 + 23 + 3
    backbone = ResNetBackbone(101, dcn_stages=(2, 3, 4))
    load_resnet_weights(backbone, state_dict)
    statistics = [w for w in backbone.weights if w.path.endswith(("moving_mean", "moving_variance"))]
    parameters = sum(int(np.prod(w.shape)) for w in backbone.weights if not any(w is s for s in statistics))
    assert parameters == int(fixture["parameters"]) == 43_786_332
    block = backbone.stages[1][0]  # layer2.0: the offsets really move the samples (|mean| about a pixel)
    offsets = block.conv2.conv_offset(
        np.pad(_block_input(backbone, fixture["image"]), ((0, 0), (1, 1), (1, 1), (0, 0)))
    )
    assert _relative_error(offsets, fixture["offset_layer2_0"]) <= RTOL
    assert 0.5 < float(np.mean(np.abs(fixture["offset_layer2_0"]))) < 2.0
    for name, actual in zip(("c3", "c4", "c5"), backbone(fixture["image"])):
        assert actual.shape == fixture[name].shape, name
        assert _relative_error(actual, fixture[name]) <= RTOL, name


def _block_input(backbone, image):
    """What ``layer2.0``'s conv2 reads: the stem, ``layer1`` and ``layer2.0``'s conv1, bn1, ReLU."""
    x = image
    for layer in backbone.stem:
        x = layer(x)
    for block in backbone.stages[0]:
        x = block(x)
    block = backbone.stages[1][0]
    return np.maximum(np.asarray(block.bn1(block.conv1(x))), 0.0)


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
    assert fixture["cls"].shape[-1] == (81 if drop_background else 80)
    _assert_dense_outputs(model, fixture["image"], fixture["cls"], fixture["reg"], fixture["level_sizes"])


def _assert_dense_outputs(model, image, cls, reg, level_sizes):
    """``model``'s dense outputs on ``image`` equal the reference's ``cls`` ``[1, A, C]`` (V2: joint
    scores, V1: logits; the official V2 models' last, background channel left out) and ``reg``
    ``[1, A, 68]``, level by level (``level_sizes``: ``[H, W]`` of P3-P7)."""
    out = model(image)
    expected_cls = cls[..., : model.num_classes]
    actual_cls = out["cls_scores"] if model.dgqp else out["cls_logits"]  # V1: the reference returns logits
    for level, (a, e) in enumerate(
        zip(_levels(np.asarray(actual_cls), level_sizes), _levels(expected_cls, level_sizes))
    ):
        assert a.shape == e.shape
        assert _relative_error(a, e) <= RTOL, f"cls P{level + 3}"
    for level, (a, e) in enumerate(zip(_levels(np.asarray(out["reg_logits"]), level_sizes), _levels(reg, level_sizes))):
        assert a.shape == e.shape
        assert _relative_error(a, e) <= RTOL, f"reg P{level + 3}"


@pytest.fixture(scope="module")
def resnext_dcn():
    return load_fixture("resnext101_dcn_reference.npz")


def test_mmdet_resnext101_32x4d_with_dcn_in_c4_c5_gives_the_reference_c3_c4_c5(resnext_dcn):
    fixture = resnext_dcn
    backbone = ResNeXtBackbone(101, groups=32, base_width=4, dcn_stages=(3, 4))
    load_backbone_weights(backbone, _offsets_scaled(fixture_state_dict(fixture), fixture))
    parameters = sum(int(np.prod(w.shape)) for w in backbone.weights if "moving" not in w.path)
    assert parameters == int(fixture["parameters"]) == 44_534_548
    deformable = [
        block.conv2 for stage in backbone.stages for block in stage if isinstance(block.conv2, DeformableConv2D)
    ]
    assert len(deformable) == 23 + 3 and deformable[0] is backbone.stages[2][0].conv2
    # layer3's conv2 keeps ResNeXt's 32 groups of 16 channels; its offset conv reads all 512.
    assert tuple(deformable[0].kernel.shape) == (3, 3, 16, 512)
    assert tuple(deformable[0].conv_offset.kernel.shape) == (3, 3, 512, 18)
    assert 0.5 < float(np.mean(np.abs(fixture["offset_layer3_0"]))) < 2.0  # the samples really move
    image = fixture["image"]
    for name, actual in zip(("c3", "c4", "c5"), backbone(image)):
        assert actual.shape == fixture[name].shape, name
        assert _relative_error(actual, fixture[name]) <= RTOL, name
    # The fixture tells x from y: every tap's (dy, dx) read as (dx, dy) misses it by far.
    swap = np.arange(18).reshape(9, 2)[:, ::-1].reshape(-1)
    for conv in deformable:
        conv.conv_offset.kernel.assign(np.asarray(conv.conv_offset.kernel)[..., swap])
        conv.conv_offset.bias.assign(np.asarray(conv.conv_offset.bias)[swap])
    assert _relative_error(backbone(image)[2], fixture["c5"]) > 100 * RTOL


#: The narrow DCN detectors of ``make_resnext_dcn_fixtures.py``: 64-wide FPN and head, GroupNorm of 8 groups.
DENSE_NARROWING = {"fpn_channels": 64, "head_channels": 64, "groups": 8}


@pytest.mark.parametrize(
    "version, preset", [(2, "gfocal_v2_x101_32x4d_dcn_fpn"), (1, "gfocal_v1_r101_dcn_fpn")], ids=["v2", "v1"]
)
def test_dcn_detectors_give_the_reference_dense_outputs(resnext_dcn, version, preset):
    """V2: the official GFocalV2 head (DGQP, background channel) over ResNeXt-101 32x4d with DCN
    in c4-c5; V1: MMDetection's GFL over ResNet-101 with DCN in c3-c5."""
    fixture = resnext_dcn
    shapes = json.loads(str(fixture[f"dense_v{version}_shapes"]))
    state_dict = _offsets_scaled(seeded_state_dict(shapes), fixture)
    model = GFocalDetector.from_preset(preset, num_classes=80, backbone_weights=None, **DENSE_NARROWING)
    model.build((None, None, None, 3))
    load_gfocal_weights(model, state_dict, "the narrow DCN detector", drop_background=version == 2)
    cls = fixture[f"dense_v{version}_cls"]
    assert cls.shape[-1] == (81 if version == 2 else 80)
    _assert_dense_outputs(model, fixture["image"], cls, fixture[f"dense_v{version}_reg"], fixture["dense_level_sizes"])


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
