"""Res2NetBackbone and Bottle2neck: widths, arguments, config, and a block's numbers in NumPy.

The whole backbone against MMDetection's is in ``tests/pretrained/test_res2net_weights.py``.
"""

import numpy as np
import numpy_reference as ref
import pytest

from keras_gfocal.layers import DeformableConv2D, Res2NetBackbone
from keras_gfocal.layers.res2net import RES2NET_BLOCKS, Bottle2neck, split_width


def test_widths_blocks_and_channels_of_the_26w_4s_model():
    assert [split_width(planes, 26) for planes in (64, 128, 256, 512)] == [26, 52, 104, 208]
    assert split_width(64, 14) == 14 and split_width(128, 48) == 96
    backbone = Res2NetBackbone()
    assert [len(stage) for stage in backbone.stages] == list(RES2NET_BLOCKS[101]) == [3, 4, 23, 3]
    assert backbone.output_channels == (512, 1024, 2048)
    first, second = backbone.stages[1][:2]
    assert (first.width, first.filters, first.strides, first.first_in_stage) == (52, 512, 2, True)
    assert (second.strides, second.first_in_stage) == (1, False)
    assert backbone.stages[0][0].strides == 1 and backbone.stages[0][0].pool is None
    assert [layer.name for layer in backbone.stem if hasattr(layer, "kernel_size")] == ["stem_0", "stem_3", "stem_6"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"depth must be one of \[50, 101, 152\], got 34"):
        Res2NetBackbone(34)
    with pytest.raises(ValueError, match=r"scales must be at least 2 \(1 is a ResNet\), got 1"):
        Res2NetBackbone(scales=1)
    with pytest.raises(ValueError, match=r"frozen_stages must be in \[-1, 4\], got 5"):
        Res2NetBackbone(frozen_stages=5)
    with pytest.raises(ValueError, match=r"dcn_stages must be distinct stage numbers in 1\.\.4, got \(False, True\)"):
        Res2NetBackbone(dcn_stages=(False, True))
    with pytest.raises(ValueError, match=r"distinct stage numbers in 1\.\.4, got \(0, 3\)"):
        Res2NetBackbone(dcn_stages=(0, 3))
    with pytest.raises(ValueError, match=r"distinct stage numbers in 1\.\.4, got \(3, 3\)"):
        Res2NetBackbone(dcn_stages=(3, 3))


def test_config_round_trip_names_no_weights():
    backbone = Res2NetBackbone(50, scales=6, base_width=14, frozen_stages=-1, name="r2n50")
    config = backbone.get_config()
    keys = ("depth", "scales", "base_width", "frozen_stages", "dcn_stages", "dcn_modulated")
    assert {k: config[k] for k in keys} == {
        "depth": 50,
        "scales": 6,
        "base_width": 14,
        "frozen_stages": -1,
        "dcn_stages": [],
        "dcn_modulated": False,
    }
    clone = Res2NetBackbone.from_config(config)
    assert clone.get_config() == config and clone.name == "r2n50"
    assert clone.stages[3][0].width == 112 and len(clone.stages[3][0].convs) == 5
    assert not any(isinstance(conv, DeformableConv2D) for stage in clone.stages for b in stage for conv in b.convs)
    block = Bottle2neck(8, 32, scales=3, strides=2, first_in_stage=True, name="b")
    assert Bottle2neck.from_config(block.get_config()).get_config() == block.get_config()


def test_dcn_stages_make_those_stages_split_convs_deformable_through_a_config_round_trip():
    backbone = Res2NetBackbone(50, dcn_stages=(2, 4), dcn_modulated=True)
    config = backbone.get_config()
    assert config["dcn_stages"] == [2, 4] and config["dcn_modulated"] is True
    clone = Res2NetBackbone.from_config(config)
    assert clone.get_config() == config
    for stage, deformable in zip(clone.stages, (False, True, False, True)):
        for block in stage:
            assert block.deformable == deformable
            assert all(isinstance(conv, DeformableConv2D) == deformable for conv in block.convs)
    conv = clone.stages[1][0].convs[2]
    assert (conv.name, conv.filters, conv.strides, conv.padding, conv.modulated) == ("convs_2", 52, 2, 1, True)
    assert clone.stages[3][1].convs[0].strides == 1
    block = Bottle2neck(8, 32, scales=3, strides=2, first_in_stage=True, deformable=True, name="b")
    assert Bottle2neck.from_config(block.get_config()).get_config() == block.get_config()
    assert block.get_config()["deformable"] is True and block.get_config()["modulated"] is False


# ----------------------------------------------------------------------------- NumPy reference
def _avg_pool_counting_padding(x, stride):
    """``nn.AvgPool2d(3, stride, padding=1)``: zeros padded on every side count in the mean."""
    channels = x.shape[-1]
    return ref.conv2d_nhwc(x, np.eye(channels)[None, None].repeat(3, 0).repeat(3, 1) / 9.0, stride, pad=1)


def _avg_pool_ceil(x, k):
    """``nn.AvgPool2d(k, k, ceil_mode=True, count_include_pad=False)``: a partial window at the
    bottom or right edge averages only the cells it covers."""
    b, h, w, c = x.shape
    out = np.zeros((b, -(-h // k), -(-w // k), c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, i * k : (i + 1) * k, j * k : (j + 1) * k].mean(axis=(1, 2))
    return out


def _bn(x, bn):
    return ref.frozen_batch_norm(x, *bn.weights)


def _bottle2neck_numpy(block, x):
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    k = lambda conv: np.asarray(conv.kernel, np.float64)  # noqa: E731
    y = relu(_bn(ref.conv2d_nhwc(x, k(block.conv1)), block.bn1))
    splits = np.split(y, block.scales, axis=-1)
    outputs = []
    for i in range(block.scales - 1):
        inner = splits[i] if i == 0 or block.first_in_stage else outputs[-1] + splits[i]
        outputs.append(relu(_bn(ref.conv2d_nhwc(inner, k(block.convs[i]), block.strides, pad=1), block.bns[i])))
    last = splits[-1]
    if block.first_in_stage and block.strides > 1:
        last = _avg_pool_counting_padding(last, block.strides)
    y = _bn(ref.conv2d_nhwc(np.concatenate(outputs + [last], axis=-1), k(block.conv3)), block.bn3)
    shortcut = x
    if block.first_in_stage:
        pooled = _avg_pool_ceil(x, block.strides) if block.strides > 1 else x
        shortcut = _bn(ref.conv2d_nhwc(pooled, k(block.downsample_conv)), block.downsample_bn)
    return relu(y + shortcut)


def _random_statistics(block, rng):
    for bn in [block.bn1, block.bn3, *block.bns] + ([block.downsample_bn] if block.first_in_stage else []):
        n = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)])


@pytest.mark.parametrize(
    "strides, first_in_stage, in_channels, deformable",
    [(2, True, 5, False), (1, True, 5, False), (1, False, 16, False), (2, True, 5, True), (1, False, 16, True)],
    ids=["first-strided", "first-layer1", "normal", "first-strided-dcn", "normal-dcn"],
)
def test_bottle2neck_numbers_on_an_odd_map(strides, first_in_stage, in_channels, deformable):
    # 5x7 is odd both ways: the last split's pool counts its padding, the shortcut's does not. A
    # deformable block's offset convs start at zero: it must compute the plain block's numbers
    # (its offsets against MMDetection's are in tests/pretrained/test_res2net_dcn_weights.py).
    rng = np.random.default_rng(7)
    block = Bottle2neck(3, 16, scales=4, strides=strides, first_in_stage=first_in_stage, deformable=deformable)
    block.build((None, 5, 7, in_channels))
    assert all(isinstance(conv, DeformableConv2D) == deformable for conv in block.convs)
    _random_statistics(block, rng)
    x = rng.normal(size=(2, 5, 7, in_channels))
    y = np.asarray(block(x.astype("float32")))
    assert y.shape == block.compute_output_shape(x.shape) == (2, -(-5 // strides), -(-7 // strides), 16)
    np.testing.assert_allclose(y, _bottle2neck_numpy(block, x), rtol=1e-4, atol=1e-4)


def test_batchnorm_runs_in_inference_mode_when_training():
    rng = np.random.default_rng(3)
    block = Bottle2neck(2, 8, scales=3, strides=2, first_in_stage=True)
    block.build((None, 6, 6, 4))
    _random_statistics(block, rng)
    before = [np.asarray(w).copy() for w in block.non_trainable_weights]
    x = rng.normal(size=(2, 6, 6, 4)).astype("float32")
    np.testing.assert_array_equal(np.asarray(block(x, training=True)), np.asarray(block(x, training=False)))
    for a, w in zip(before, block.non_trainable_weights):
        np.testing.assert_array_equal(a, np.asarray(w))
