"""DeformableConv2D against real PyTorch (``torchvision.ops.deform_conv2d`` fed by an
mmcv-style offset conv, ``tests/fixtures/make_deform_conv_fixtures.py``), against hand cases
and a small NumPy sampler, and through graph mode, XLA, serialisation and TFLite."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference_weights import load_fixture, seeded_value

from keras_gfocal.layers import DeformableConv2D

FIXTURE = load_fixture("deform_conv_reference.npz")
CASES = json.loads(str(FIXTURE["cases"]))


def _seeded_layer(name, kwargs, input_shape):
    """The fixture case's layer with the generator's seeded PyTorch weights, transposed to Keras'."""
    layer = DeformableConv2D(**kwargs)
    layer.build(input_shape)
    kh, kw, cin, cout = layer.conv_offset.kernel.shape
    layer.conv_offset.kernel.assign(
        seeded_value(f"{name}.conv_offset.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0)
    )
    layer.conv_offset.bias.assign(seeded_value(f"{name}.conv_offset.bias", (cout,)))
    kh, kw, cin, cout = layer.kernel.shape
    layer.kernel.assign(seeded_value(f"{name}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0))
    if layer.use_bias:
        layer.bias.assign(seeded_value(f"{name}.bias", (cout,)))
    return layer


def _relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torchvision(name):
    image, expected = FIXTURE[f"{name}.image"], FIXTURE[f"{name}.output"]
    layer = _seeded_layer(name, CASES[name], image.shape)
    pad = layer.padding
    offsets = layer.conv_offset(np.pad(image, [(0, 0), (pad, pad), (pad, pad), (0, 0)]))
    assert _relative_error(offsets, FIXTURE[f"{name}.offset"]) <= 1e-5
    output = layer(image)
    assert output.shape == expected.shape == layer.compute_output_shape(image.shape)
    assert _relative_error(output, expected) <= 1e-5


def test_fixture_offsets_move_samples_across_pixels_and_off_the_map():
    # The stride-1 case's taps at the regular grid plus their offsets: many land beyond the map.
    image, offset = FIXTURE["stride1.image"], FIXTURE["stride1.offset"]
    _, height, width, _ = image.shape
    shift = offset.reshape(offset.shape[:3] + (9, 2))
    rows = np.arange(height)[:, None, None] - 1 + np.arange(9)[None, None, :] // 3 + shift[..., 0]
    cols = np.arange(width)[None, :, None] - 1 + np.arange(9)[None, None, :] % 3 + shift[..., 1]
    outside = (rows <= -1) | (rows >= height) | (cols <= -1) | (cols >= width)
    assert np.mean(np.abs(shift) > 1.0) > 0.2 and outside.sum() > 50


def _constant_offset_layer(offset_bias, channels=1, **kwargs):
    """A 3x3 layer whose offsets are the constant ``offset_bias`` and whose kernel is one at the centre tap."""
    layer = DeformableConv2D(channels, use_bias=False, **kwargs)
    layer.build((None, None, None, channels))
    layer.conv_offset.bias.assign(np.asarray(offset_bias, np.float32))
    kernel = np.zeros(layer.kernel.shape, np.float32)
    kernel[1, 1] = np.eye(channels, dtype=np.float32)
    layer.kernel.assign(kernel)
    return layer


RAMP = (100 * np.arange(5)[:, None] + np.arange(6)[None, :]).astype(np.float32)[None, :, :, None]


@pytest.mark.parametrize(
    "channel, expected",
    [
        (8, np.concatenate([RAMP[:, 1:], np.zeros_like(RAMP[:, :1])], axis=1)),  # centre tap's dy: one row down
        (9, np.concatenate([RAMP[:, :, 1:], np.zeros_like(RAMP[:, :, :1])], axis=2)),  # its dx: one column right
        (0, RAMP),  # the top-left tap's dy: its kernel weight is zero
    ],
    ids=["dy", "dx", "other_tap"],
)
def test_offset_channels_are_dy_then_dx_per_tap(channel, expected):
    # The hand case the fixture generator also runs in torchvision.
    bias = np.zeros(18, np.float32)
    bias[channel] = 1.0
    np.testing.assert_array_equal(np.asarray(_constant_offset_layer(bias)(RAMP)), expected)


def _numpy_bilinear_zero_padded(image, dy, dx):
    """``image`` ``[H, W]`` read at ``(i + dy, j + dx)``: bilinear on a map surrounded by zeros."""
    margin = 32  # beyond every offset tried below
    padded = np.pad(image, margin)
    height, width = image.shape
    y = np.arange(height)[:, None] + dy + margin
    x = np.arange(width)[None, :] + dx + margin
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    return (
        padded[y0, x0] * (1 - fy) * (1 - fx)
        + padded[y0, x0 + 1] * (1 - fy) * fx
        + padded[y0 + 1, x0] * fy * (1 - fx)
        + padded[y0 + 1, x0 + 1] * fy * fx
    )


@pytest.mark.parametrize("dy, dx", [(0.5, -0.25), (-1.75, 2.5), (4.5, 0.0), (-20.0, 3.0)])
def test_samples_off_the_map_read_zero_not_the_border(dy, dx):
    bias = np.zeros(18, np.float32)
    bias[8:10] = dy, dx
    output = np.asarray(_constant_offset_layer(bias)(RAMP + 1.0))[0, :, :, 0]
    expected = _numpy_bilinear_zero_padded(RAMP[0, :, :, 0] + 1.0, dy, dx)
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-4)


def test_modulated_mask_scales_each_sample_by_its_sigmoid():
    bias = np.zeros(27, np.float32)
    bias[8:10] = 0.5, 0.25
    bias[18 + 4] = 0.7  # the centre tap's mask logit
    output = np.asarray(_constant_offset_layer(bias, modulated=True)(RAMP))[0, :, :, 0]
    expected = _numpy_bilinear_zero_padded(RAMP[0, :, :, 0], 0.5, 0.25) / (1 + np.exp(-0.7))
    np.testing.assert_allclose(output, expected, rtol=1e-5)


def test_offsets_receive_the_gradient_of_the_bilinear_sampling():
    # Inside one pixel cell the sample is linear in each offset, so central differences of the
    # NumPy sampler are exact; the layer's gradient reaches conv_offset through the weights.
    dy, dx, step = 0.3, -0.4, 0.05
    bias = np.zeros(18, np.float32)
    bias[8:10] = dy, dx
    layer = _constant_offset_layer(bias)
    upstream = np.random.default_rng(0).normal(size=RAMP.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(RAMP) * upstream)
    gradient = np.asarray(tape.gradient(loss, layer.conv_offset.bias))

    def loss_at(y, x):
        return np.sum(_numpy_bilinear_zero_padded(RAMP[0, :, :, 0].astype(np.float64), y, x) * upstream[0, :, :, 0])

    expected_dy = (loss_at(dy + step, dx) - loss_at(dy - step, dx)) / (2 * step)
    expected_dx = (loss_at(dy, dx + step) - loss_at(dy, dx - step)) / (2 * step)
    np.testing.assert_allclose(gradient[8:10], [expected_dy, expected_dx], rtol=1e-4)
    np.testing.assert_array_equal(gradient[:8], 0.0)  # taps whose kernel weight is zero


@pytest.mark.parametrize("kwargs", [dict(strides=2), dict(dilation=2), dict(padding=0)], ids=str)
def test_zero_offsets_give_a_plain_convolution(kwargs):
    # A fresh layer: conv_offset is zero-initialised, so it samples the regular grid.
    image = np.random.default_rng(0).normal(size=(2, 7, 8, 4)).astype(np.float32)
    layer = DeformableConv2D(5, use_bias=True, bias_initializer="random_normal", **kwargs)
    output = layer(image)
    pad = layer.padding
    plain = keras.layers.Conv2D(5, 3, strides=layer.strides, dilation_rate=layer.dilation)
    plain.build((None, None, None, 4))
    plain.set_weights([np.asarray(layer.kernel), np.asarray(layer.bias)])
    expected = plain(np.pad(image, [(0, 0), (pad, pad), (pad, pad), (0, 0)]))
    np.testing.assert_allclose(np.asarray(output), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["stride2_groups4_deform_groups2", "modulated"])
def test_graph_mode_with_unknown_sizes_and_xla(name):
    image, expected = FIXTURE[f"{name}.image"], FIXTURE[f"{name}.output"]
    layer = _seeded_layer(name, CASES[name], image.shape)
    graph = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, image.shape[-1]), tf.float32)])
    assert _relative_error(graph(image), expected) <= 1e-5
    xla = tf.function(layer, jit_compile=True)
    assert _relative_error(xla(image), expected) <= 1e-5


def test_config_round_trip_and_keras_file(tmp_path):
    name = "modulated_deform_groups2"
    image, expected = FIXTURE[f"{name}.image"], FIXTURE[f"{name}.output"]
    layer = _seeded_layer(name, CASES[name], image.shape)
    clone = DeformableConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.deform_groups, clone.modulated, clone.padding) == (2, True, 1)
    inputs = keras.Input((None, None, image.shape[-1]))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "dcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert _relative_error(loaded(image), expected) <= 1e-5


def test_weight_names_a_converter_maps():
    # <prefix>.weight -> kernel, <prefix>.conv_offset.weight / .bias -> conv_offset/kernel, /bias.
    layer = DeformableConv2D(8, groups=4, modulated=True, use_bias=True, name="conv2")
    layer.build((1, 5, 5, 12))
    assert {v.path: tuple(v.shape) for v in layer.weights} == {
        "conv2/kernel": (3, 3, 3, 8),
        "conv2/bias": (8,),
        "conv2/conv_offset/kernel": (3, 3, 12, 27),
        "conv2/conv_offset/bias": (27,),
    }


def test_tflite_float_builtin_ops_and_litert_outputs():
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from keras_gfocal.export import gpu_delegate

    name = "stride2_groups4_deform_groups2"
    image, expected = FIXTURE[f"{name}.image"], FIXTURE[f"{name}.output"]
    layer = _seeded_layer(name, CASES[name], image.shape)
    concrete = tf.function(layer, input_signature=[tf.TensorSpec(image.shape, tf.float32)]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert _relative_error(output, expected) <= 1e-5
    report = gpu_delegate.check(flatbuffer)
    names = {op.name for op in report.ops}
    assert "GATHER" in names and not any(n.startswith(("CUSTOM", "FLEX")) for n in names)


@pytest.mark.parametrize(
    "kwargs, input_channels, message",
    [
        (dict(filters=6, groups=4), 8, "multiple of groups"),
        (dict(filters=8, groups=3), 9, "multiple of groups"),
        (dict(filters=8, deform_groups=3), 8, "deform_groups=3"),
        (dict(filters=8, strides=2, dilation=2), 8, "cannot both"),
        (dict(filters=8, padding=-1), 8, "padding"),
    ],
)
def test_refuses_inconsistent_arguments(kwargs, input_channels, message):
    with pytest.raises(ValueError, match=message):
        DeformableConv2D(**kwargs).build((1, 5, 5, input_channels))
