"""Res2Net-101 v1d 26w4s with DCN in c4-c5 against MMDetection 3.3's ``Res2Net``, through its
weight converter.

``tests/fixtures/mmdet_res2net101_dcn.npz`` holds what the real MMDetection module gives (torch,
seeded weights with offset convs scaled to move the samples by about a pixel, eval mode, its
deformable convs computed by ``torchvision.ops.deform_conv2d``), written by
``tests/fixtures/make_res2net_dcn_fixtures.py``. One backbone is built for the module; a test that
loads other weights into it puts the seeded ones back.
"""

import numpy as np
import pytest
from reference_weights import fixture_state_dict, load_fixture

from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.layers import DeformableConv2D, Res2NetBackbone
from keras_gfocal.pretrained import backbone_rows, load_backbone_weights

RTOL = 1e-4
DCN_C4_C5 = (3, 4)


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("mmdet_res2net101_dcn.npz")


@pytest.fixture(scope="module")
def state_dict(fixture):
    """The seeded state dict, the offset convs' weights scaled as the generator scaled them."""
    return {
        key: value * fixture["offset_scale"] if key.endswith(".conv_offset.weight") else value
        for key, value in fixture_state_dict(fixture).items()
    }


@pytest.fixture(scope="module")
def seeded(state_dict):
    backbone = Res2NetBackbone(dcn_stages=DCN_C4_C5)
    load_backbone_weights(backbone, state_dict)
    return backbone


def _relative_error(actual, expected):
    """Largest absolute difference over the largest magnitude of the reference."""
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def _deformable_convs(backbone):
    return [conv for stage in backbone.stages for block in stage for conv in block.convs if block.deformable]


def test_the_split_convs_of_layer3_and_layer4_are_deformable(seeded):
    convs = _deformable_convs(seeded)
    assert len(convs) == 3 * (23 + 3) and all(isinstance(conv, DeformableConv2D) for conv in convs)
    assert [block.deformable for stage in seeded.stages for block in stage[:1]] == [False, False, True, True]
    first = seeded.stages[2][0].convs[0]  # layer3.0: the stride of the stage's first block, padding 1
    assert (first.strides, first.padding, first.modulated, first.use_bias) == (2, 1, False, False)
    assert seeded.stages[2][1].convs[2].strides == 1


def test_seeded_res2net101_dcn_gives_mmdets_c3_c4_c5(fixture, seeded):
    # 68x100: the stages run on 17x25, 9x13, 5x7 and 3x4 maps.
    for name, actual in zip(("c3", "c4", "c5"), seeded(fixture["image"])):
        expected = fixture[name]
        assert actual.shape == expected.shape, name
        assert _relative_error(actual, expected) <= RTOL, name


def _layer3_0_split(backbone, image):
    """What ``layer3.0.convs.0`` reads: the first split of ``layer3.0``'s conv1, bn1 and ReLU."""
    x = image
    for layer in backbone.stem:
        x = layer(x)
    for stage in backbone.stages[:2]:
        for block in stage:
            x = block(x)
    block = backbone.stages[2][0]
    return np.maximum(np.asarray(block.bn1(block.conv1(x))), 0.0)[..., : block.width]


def test_the_offsets_are_mmdets_and_move_the_samples_by_about_a_pixel(fixture, seeded):
    conv = seeded.stages[2][0].convs[0]
    offsets = conv.conv_offset(np.pad(_layer3_0_split(seeded, fixture["image"]), ((0, 0), (1, 1), (1, 1), (0, 0))))
    assert offsets.shape == fixture["offset_layer3_0"].shape == (1, 5, 7, 18)
    assert _relative_error(offsets, fixture["offset_layer3_0"]) <= RTOL
    assert 0.5 < float(np.mean(np.abs(fixture["offset_layer3_0"]))) < 2.0


def test_parameter_count_equals_torchs(fixture, seeded):
    statistics = ("moving_mean", "moving_variance")  # torch buffers, not parameters
    count = sum(int(np.prod(w.shape)) for w in seeded.weights if not w.path.endswith(statistics))
    # 43,176,920 of the plain Res2Net-101, plus 78 offset convs of 18 x (9 x width + 1).
    assert count == int(fixture["parameters"]) == 43_176_920 + 69 * (18 * 9 * 104 + 18) + 9 * (18 * 9 * 208 + 18)


def _snapshot(backbone):
    return [np.asarray(w).copy() for w in backbone.weights]


def test_a_state_dict_without_offsets_starts_the_deformable_convs_as_plain_convs(seeded, state_dict):
    # The plain Res2Net-101 fixture: its seeded weights are the same keys less every conv_offset,
    # what an ImageNet file holds; MMDetection starts the offset convs at zero, plain convs.
    plain = load_fixture("mmdet_res2net101.npz")
    before = _snapshot(seeded)
    broken = {k: v for k, v in fixture_state_dict(plain).items() if k != "stem.0.weight"}
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: stem\.0\.weight\.$"):
        load_backbone_weights(seeded, broken)
    for a, b in zip(before, _snapshot(seeded)):  # the offset convs were not zeroed either
        np.testing.assert_array_equal(a, b)
    try:
        load_backbone_weights(seeded, fixture_state_dict(plain))
        for conv in _deformable_convs(seeded):
            assert not np.any(np.asarray(conv.conv_offset.kernel)) and not np.any(np.asarray(conv.conv_offset.bias))
        for name, actual in zip(("c3", "c4", "c5"), seeded(plain["image"])):
            assert _relative_error(actual, plain[name]) <= RTOL, name
    finally:
        load_backbone_weights(seeded, state_dict)


def test_some_offsets_but_not_all_are_named_and_change_nothing(seeded, state_dict):
    before = _snapshot(seeded)
    partial = {k: v for k, v in state_dict.items() if k != "layer4.2.convs.2.conv_offset.bias"}
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^the given state dict does not fit the model; "
        r"missing from the checkpoint: layer4\.2\.convs\.2\.conv_offset\.bias\.$",
    ):
        load_backbone_weights(seeded, partial)
    for a, b in zip(before, _snapshot(seeded)):
        np.testing.assert_array_equal(a, b)


def test_a_dcn_state_dict_into_a_plain_res2net_names_the_first_offset_conv(state_dict):
    plain = Res2NetBackbone()
    plain.build((None, None, None, 3))
    assert not any(".conv_offset." in key for key, _, _ in backbone_rows(plain))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^the given state dict does not fit the model; not used by the model: "
        r"layer3\.0\.convs\.0\.conv_offset\.bias, layer3\.0\.convs\.0\.conv_offset\.weight, .* \(and 151 more\)\.$",
    ):
        load_backbone_weights(plain, state_dict)
