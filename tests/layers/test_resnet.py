"""ResNetBackbone and Bottleneck: shapes, freezing, config, and a bottleneck's numbers in NumPy."""

import keras
import numpy as np
import numpy_reference as ref
import pytest

from keras_gfocal.layers import DeformableConv2D, ResNetBackbone
from keras_gfocal.layers.resnet import RESNET_BLOCKS, Bottleneck


def test_resnet_pads_stride_2_convs_symmetrically():
    # One-hot input at (0, 0): with PyTorch's padding=1 on each side, the stride-2 3x3
    # conv's output (0, 0) sees input (0, 0) through kernel tap (1, 1); Keras' "same"
    # would pad only after and use tap (0, 0).
    backbone = ResNetBackbone(50)
    block = backbone.stages[1][0]  # layer2.0: the stride-2 3x3 conv
    block.build((None, 8, 8, 256))
    kernel = np.zeros(block.conv2.kernel.shape, "float32")
    kernel[1, 1, 0, 0] = 1.0
    block.conv2.kernel.assign(kernel)
    x = np.zeros((1, 8, 8, 128), "float32")
    x[0, 0, 0, 0] = 1.0
    y = np.asarray(block.conv2(block.pad2(x)))
    assert y.shape == (1, 4, 4, 128)
    assert y[0, 0, 0, 0] == 1.0 and np.count_nonzero(y) == 1


@pytest.fixture(scope="module")
def resnet50():
    backbone = ResNetBackbone(50)
    backbone.build((None, 64, 96, 3))
    return backbone


def test_resnet50_shapes_and_channels(resnet50):
    images = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype("float32")
    outputs = resnet50(images)
    assert [tuple(c.shape) for c in outputs] == [(1, 8, 12, 512), (1, 4, 6, 1024), (1, 2, 3, 2048)]
    assert resnet50.output_channels == (512, 1024, 2048)
    assert [len(stage) for stage in resnet50.stages] == [3, 4, 6, 3]
    assert [len(stage) for stage in ResNetBackbone(101).stages] == list(RESNET_BLOCKS[101]) == [3, 4, 23, 3]


def test_reference_freezing_and_batchnorm_in_inference_mode(resnet50):
    # frozen_stages=1: the stem and layer1 frozen; BatchNorm statistics never train.
    assert all(not layer.trainable for layer in resnet50.stem)
    assert all(not block.trainable for block in resnet50.stages[0])
    assert all(block.trainable for stage in resnet50.stages[1:] for block in stage)
    paths = [w.path.split("/", 1)[1] for w in resnet50.trainable_weights]
    assert all(p.split("_")[0] in ("layer2", "layer3", "layer4") for p in paths), paths[:3]
    assert not any("moving" in p for p in paths)
    # 13 blocks in layer2-4 x (3 kernels + 3 BatchNorm gammas and betas), 3 projection shortcuts x 3
    assert len(paths) == 13 * 9 + 3 * 3
    bn = resnet50.stages[1][0].bn1
    gamma_beta = {w.name for w in bn.trainable_weights}
    assert gamma_beta == {"gamma", "beta"}
    before = np.asarray(bn.moving_mean).copy()
    images = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype("float32")
    trained = [np.asarray(c) for c in resnet50(images, training=True)]
    inferred = [np.asarray(c) for c in resnet50(images, training=False)]
    np.testing.assert_array_equal(np.asarray(bn.moving_mean), before)
    for a, b in zip(trained, inferred):
        np.testing.assert_array_equal(a, b)


def test_frozen_stages_zero_and_bad_arguments():
    backbone = ResNetBackbone(50, frozen_stages=0)
    assert all(layer.trainable for layer in backbone.stem)
    with pytest.raises(ValueError, match=r"depth must be one of \[50, 101\], got 34"):
        ResNetBackbone(34)
    with pytest.raises(ValueError, match=r"frozen_stages must be in \[0, 4\], got 5"):
        ResNetBackbone(50, frozen_stages=5)


def test_resnet_config_round_trip_names_no_weights():
    backbone = ResNetBackbone(101, frozen_stages=2, name="r101")
    config = backbone.get_config()
    assert config["depth"] == 101 and config["frozen_stages"] == 2 and "weights" not in config
    clone = ResNetBackbone.from_config(config)
    assert clone.get_config() == config and clone.name == "r101"


def _bn_numpy(x, bn):
    return ref.frozen_batch_norm(x, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)


def test_bottleneck_numbers_with_a_projection_shortcut():
    rng = np.random.default_rng(4)
    block = Bottleneck(2, strides=2, downsample=True)
    block.build((None, 5, 7, 3))
    for bn in (block.bn1, block.bn2, block.bn3, block.downsample_bn):
        n = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n), rng.uniform(0.5, 2, n)])
    x = rng.normal(size=(1, 5, 7, 3))
    y = np.asarray(block(x.astype("float32")))
    assert y.shape == (1, 3, 4, 8) == block.compute_output_shape((1, 5, 7, 3))  # ceil(5 / 2), ceil(7 / 2), 4 x 2

    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    k = lambda conv: np.asarray(conv.kernel, np.float64)  # noqa: E731
    inner = relu(_bn_numpy(ref.conv2d_nhwc(x, k(block.conv1)), block.bn1))
    inner = relu(_bn_numpy(ref.conv2d_nhwc(inner, k(block.conv2), stride=2, pad=1), block.bn2))
    inner = _bn_numpy(ref.conv2d_nhwc(inner, k(block.conv3)), block.bn3)
    shortcut = _bn_numpy(ref.conv2d_nhwc(x, k(block.downsample_conv), stride=2), block.downsample_bn)
    np.testing.assert_allclose(y, relu(inner + shortcut), rtol=1e-4, atol=1e-5)


def test_bottleneck_config_round_trip():
    block = Bottleneck(4, strides=2, downsample=True, name="layer2_0")
    config = block.get_config()
    assert (config["width"], config["strides"], config["downsample"]) == (4, 2, True)
    clone = keras.layers.deserialize(keras.layers.serialize(block))
    assert isinstance(clone, Bottleneck) and clone.get_config() == config


def test_dcn_stages_put_a_deformable_conv2_in_every_block_of_the_listed_stages():
    backbone = ResNetBackbone(50, dcn_stages=(4, 2), dcn_modulated=True)
    for stage, deformable in zip(backbone.stages, (False, True, False, True)):
        for block in stage:
            assert block.deformable is deformable
            assert isinstance(block.conv2, DeformableConv2D) is deformable
            if deformable:
                # The bottleneck's conv2: its stride (2 in each stage's first block), PyTorch's padding 1.
                assert block.conv2.strides == block.strides and block.conv2.padding == 1
                assert block.conv2.modulated and block.pad2 is None
    assert [b.strides for b in backbone.stages[1][:2]] == [2, 1]
    # The default: plain 3x3 convs everywhere, as the existing presets and checkpoints.
    assert not any(block.deformable for stage in ResNetBackbone(50).stages for block in stage)


def test_a_fresh_dcn_stage_is_its_plain_stage():
    # Zero-initialised offsets read the regular grid: the same kernels give the same outputs.
    plain, deformable = Bottleneck(4, strides=2, downsample=True), Bottleneck(4, 2, True, deformable=True)
    for block in (plain, deformable):
        block.build((None, 6, 7, 8))
    for source in plain.weights:
        name = source.path.split("/", 1)[1]
        target = [w for w in deformable.weights if w.path.split("/", 1)[1] == name]
        assert len(target) == 1, name
        target[0].assign(source)
    assert not np.any(np.asarray(deformable.conv2.conv_offset.kernel))
    x = np.random.default_rng(7).normal(size=(2, 6, 7, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(deformable(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-5)


def test_dcn_config_round_trip_and_bad_dcn_stages():
    backbone = ResNetBackbone(101, dcn_stages=(2, 3, 4), name="r101_dcn")
    config = backbone.get_config()
    assert config["dcn_stages"] == [2, 3, 4] and config["dcn_modulated"] is False
    clone = keras.layers.deserialize(keras.layers.serialize(backbone))
    assert clone.dcn_stages == (2, 3, 4)
    assert [isinstance(b.conv2, DeformableConv2D) for b in (clone.stages[0][0], clone.stages[3][2])] == [False, True]
    block = Bottleneck(4, deformable=True, modulated=True)
    assert keras.layers.deserialize(keras.layers.serialize(block)).conv2.modulated
    for bad in ((False, True, True, True), (0, 2), (2, 2), (5,), (2.0,)):
        with pytest.raises(ValueError, match=r"dcn_stages must be distinct stage numbers in 1\.\.4, got "):
            ResNetBackbone(50, dcn_stages=bad)


def test_a_dcn_bottleneck_with_moving_offsets_survives_a_keras_file(tmp_path):
    block = Bottleneck(4, strides=2, downsample=True, deformable=True, name="layer2_0")
    inputs = keras.Input((6, 7, 8))
    model = keras.Model(inputs, block(inputs))
    offset_conv = block.conv2.conv_offset
    offset_conv.kernel.assign(np.random.default_rng(5).normal(size=offset_conv.kernel.shape).astype("float32"))
    x = np.random.default_rng(6).normal(size=(2, 6, 7, 8)).astype("float32")
    path = tmp_path / "dcn_block.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[-1].conv2, DeformableConv2D)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def _bottleneck_under(policy, **kwargs):
    """A built stride-2 Bottleneck whose layers all have the dtype ``policy``."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        block = Bottleneck(4, strides=2, downsample=True, **kwargs)
        block.build((None, 9, 11, 8))
    finally:
        keras.config.set_dtype_policy(previous)
    return block


def _randomized_bottleneck(policy, **kwargs):
    block = _bottleneck_under(policy, groups=2, inner_width=6, **kwargs)
    rng = np.random.default_rng(11)
    for variable in block.weights:
        name = variable.path.rsplit("/", 1)[-1]
        # Variances near epsilon (1e-5), so that leaving it out shows; gamma as small, so that
        # each BatchNorm scales by about 1.
        low, high = {"gamma": (0.005, 0.015), "moving_variance": (1e-5, 1e-4)}.get(name, (-0.5, 0.5))
        variable.assign(rng.uniform(low, high, variable.shape))
    return block


def _output_and_gradients(block, x, weights):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(block(tf.cast(x, block.compute_dtype)) * tf.cast(weights, block.compute_dtype))
    variables = block.trainable_variables
    return block(tf.cast(x, block.compute_dtype)).numpy(), {
        v.path.split("/", 1)[1]: g.numpy() for v, g in zip(variables, tape.gradient(loss, variables), strict=True)
    }


@pytest.mark.parametrize("deformable", [False, True])
def test_bottleneck_convolutions_and_frozen_batchnorms_compute_as_in_float64(deformable):
    # float32 runs each plain conv and its BatchNorm as one convolution (kernel * scale, plus
    # shift); float64 runs the two Keras layers. Values and every trainable weight's gradient
    # (kernels, gamma, beta, offsets) agree to float32 rounding.
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 9, 11, 8))
    weights = rng.normal(size=(2, 5, 6, 16))
    y32, g32 = _output_and_gradients(_randomized_bottleneck("float32", deformable=deformable), x, weights)
    y64, g64 = _output_and_gradients(_randomized_bottleneck("float64", deformable=deformable), x, weights)
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5 * np.abs(y64).max())
    assert g32.keys() == g64.keys() and any("gamma" in name for name in g32)
    for name in g64:
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-4, atol=1e-4 * np.abs(g64[name]).max(), err_msg=name)


@pytest.mark.parametrize(
    "deformable, policy, folded", [(False, "float32", 4), (True, "float32", 3), (False, "mixed_bfloat16", 0)]
)
def test_bottleneck_takes_each_batchnorm_into_its_conv_where_it_can(deformable, policy, folded):
    # A plain conv convolves with its kernel times the BatchNorm's scale (a Mul feeds the
    # Conv2D's filter); a deformable conv2 and a mixed-precision block, whose scale and shift
    # would be read in bfloat16, keep the two layers.
    import tensorflow as tf

    block = _bottleneck_under(policy, deformable=deformable)
    graph = tf.function(block).get_concrete_function(tf.TensorSpec((1, 9, 11, 8))).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert sum(op.inputs[1].op.type == "Mul" for op in convs) == folded
