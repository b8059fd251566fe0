"""ResNeXtBackbone against MMDetection 3.3's ResNeXt-101 32x4d run in PyTorch on seeded weights
(``tests/fixtures/make_resnext_fixtures.py``), and its grouped 3x3 conv in NumPy."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_weights import load_fixture, seeded_state_dict

from keras_gfocal.layers import DeformableConv2D, ResNetBackbone, ResNeXtBackbone
from keras_gfocal.layers.resnet import Bottleneck
from keras_gfocal.layers.resnext import resnext_inner_width
from keras_gfocal.pretrained import load_backbone_weights


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("mmdet_resnext101_32x4d.npz")


@pytest.fixture(scope="module")
def converted(fixture):
    """The Keras ResNeXt-101 32x4d with the fixture's seeded weights, loaded through its converter."""
    backbone = ResNeXtBackbone()
    load_backbone_weights(backbone, seeded_state_dict(json.loads(str(fixture["shapes"]))))
    return backbone


def test_resnext101_32x4d_reproduces_mmdetection(fixture, converted):
    outputs = tf.function(converted)(fixture["image"])  # in a graph, as the detector runs it
    for name, output in zip(("c3", "c4", "c5"), outputs):
        expected = fixture[name]
        assert output.shape == expected.shape, name
        relative = np.abs(np.asarray(output) - expected).max() / np.abs(expected).max()
        assert relative <= 1e-4, (name, relative)


def test_parameter_count_and_widths_are_mmdetections(fixture, converted):
    counted = sum(int(np.prod(w.shape)) for w in converted.weights if "moving" not in w.path)
    assert counted == int(fixture["backbone_params"]) == 42_128_704
    # floor(planes * 4 / 64) * 32 channels inside: 128, 256, 512, 1024; 4 x planes out.
    assert [resnext_inner_width(w, 32, 4) for w in (64, 128, 256, 512)] == [128, 256, 512, 1024]
    assert resnext_inner_width(64, 1, 4) == 64  # groups=1 is a plain ResNet bottleneck
    assert resnext_inner_width(128, 8, 6) == 96  # floor(128 * 6 / 64) * 8
    block = converted.stages[2][5]
    assert (block.inner_width, block.groups, block.conv2.groups) == (512, 32, 32)
    assert tuple(block.conv2.kernel.shape) == (3, 3, 16, 512)
    assert [len(stage) for stage in converted.stages] == [3, 4, 23, 3]
    assert converted.output_channels == (512, 1024, 2048)


def test_freezing_follows_the_reference(converted):
    assert all(not layer.trainable for layer in converted.stem)
    assert all(not block.trainable for block in converted.stages[0])
    assert all(block.trainable for stage in converted.stages[1:] for block in stage)
    assert all(layer.trainable for layer in ResNeXtBackbone(frozen_stages=0).stem)


def _grouped_conv_nhwc(x, kernel, groups, stride=1, pad=1):
    """A NumPy grouped convolution: kernel ``[k, k, C / groups, O]``, output channels split in
    ``groups`` blocks, block ``g`` reading input channels block ``g`` only."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k, cin, cout = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    h = (x.shape[1] - k) // stride + 1
    w = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, cout))
    per_group = cout // groups
    for g in range(groups):
        xs = x[..., g * cin : (g + 1) * cin]
        ks = kernel[..., g * per_group : (g + 1) * per_group]
        for i in range(h):
            for j in range(w):
                patch = xs[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
                out[:, i, j, g * per_group : (g + 1) * per_group] = np.tensordot(patch, ks, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_the_grouped_3x3_conv_in_numpy_eager_and_graph():
    # Stride 2 and 4 groups of 2 channels: each output group reads only its own input group.
    block = Bottleneck(4, strides=2, downsample=True, inner_width=8, groups=4)
    block.build((None, 7, 6, 5))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 7, 6, 8)).astype("float32")
    kernel = np.asarray(block.conv2.kernel, np.float64)
    assert kernel.shape == (3, 3, 2, 8)
    expected = _grouped_conv_nhwc(x.astype(np.float64), kernel, groups=4, stride=2)
    eager = np.asarray(block.conv2(block.pad2(x)))
    graph = np.asarray(tf.function(lambda v: block.conv2(block.pad2(v)))(x))
    assert eager.shape == expected.shape == (1, 4, 3, 8)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(graph, expected, rtol=1e-5, atol=1e-5)


def test_config_round_trip_and_bad_arguments():
    backbone = ResNeXtBackbone(50, groups=8, base_width=8, frozen_stages=2, name="x50")
    config = backbone.get_config()
    assert (config["depth"], config["groups"], config["base_width"], config["frozen_stages"]) == (50, 8, 8, 2)
    clone = keras.layers.deserialize(keras.layers.serialize(backbone))
    assert isinstance(clone, ResNeXtBackbone) and clone.get_config() == config
    assert clone.stages[1][0].inner_width == 128  # floor(128 * 8 / 64) * 8
    block = Bottleneck(4, inner_width=8, groups=4, name="b")
    assert keras.layers.deserialize(keras.layers.serialize(block)).conv2.groups == 4
    with pytest.raises(ValueError, match=r"ResNeXtBackbone depth must be one of \[50, 101\], got 152"):
        ResNeXtBackbone(152)
    with pytest.raises(ValueError, match=r"ResNeXtBackbone groups must be a positive int, got 0"):
        ResNeXtBackbone(groups=0)
    assert isinstance(backbone, ResNetBackbone)


def test_dcn_stages_make_the_grouped_3x3_convs_deformable_and_keep_their_groups():
    # X101-32x4d-DCN: DCN in c4-c5. A deformable grouped conv keeps the stride, width and groups.
    backbone = ResNeXtBackbone(50, dcn_stages=(3, 4))
    for stage, deformable in zip(backbone.stages, (False, False, True, True)):
        for block in stage:
            assert isinstance(block.conv2, DeformableConv2D) is deformable
    conv2 = backbone.stages[2][0].conv2
    assert (conv2.filters, conv2.groups, conv2.strides, conv2.padding) == (512, 32, 2, 1)
    clone = keras.layers.deserialize(keras.layers.serialize(backbone))
    assert clone.dcn_stages == (3, 4) and isinstance(clone.stages[3][2].conv2, DeformableConv2D)
    outputs = backbone(np.zeros((1, 64, 64, 3), "float32"))
    assert [tuple(c.shape) for c in outputs] == [(1, 8, 8, 512), (1, 4, 4, 1024), (1, 2, 2, 2048)]
