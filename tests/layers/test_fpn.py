"""FPN structure with hand-set weights: laterals, top-down sum, P6 from P5's output, P7 from P6.

Every conv is set to an identity (1x1 laterals: identity matrix; 3x3 convs: identity on the
centre tap only; zero biases), so each output level is a plain NumPy expression of C3-C5:
P5 = C5, P4 = C4 + up(C5), P3 = C3 + up(C4 + up(C5)), P6 = P5 sampled at even cells
(symmetric padding), P7 = P6 sampled at even cells, negatives kept (no ReLU before P7).
"""

import numpy as np
import pytest

from keras_gfocal.layers.fpn import FPN

CH = 2


def _identity(conv, k):
    kernel = np.zeros((k, k, CH, CH), np.float32)
    kernel[k // 2, k // 2] = np.eye(CH)
    conv.set_weights([kernel, np.zeros(CH, np.float32)])


def _up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


@pytest.fixture(scope="module")
def fpn_and_inputs():
    rng = np.random.default_rng(0)
    c3 = rng.normal(size=(1, 8, 12, CH)).astype(np.float32)
    c4 = rng.normal(size=(1, 4, 6, CH)).astype(np.float32)
    c5 = rng.normal(size=(1, 2, 3, CH)).astype(np.float32)
    fpn = FPN(channels=CH)
    fpn.build([c.shape for c in (c3, c4, c5)])
    for conv in fpn.laterals:
        _identity(conv, 1)
    for conv in fpn.smooth + [fpn.p6, fpn.p7]:
        _identity(conv, 3)
    return fpn, (c3, c4, c5)


def test_fpn_top_down_sum_and_extra_levels_from_p5_output(fpn_and_inputs):
    fpn, (c3, c4, c5) = fpn_and_inputs
    p3, p4, p5, p6, p7 = [np.asarray(p) for p in fpn([c3, c4, c5])]
    np.testing.assert_allclose(p5, c5, atol=1e-6)
    np.testing.assert_allclose(p4, c4 + _up(c5), atol=1e-6)
    np.testing.assert_allclose(p3, c3 + _up(c4 + _up(c5)), atol=1e-6)
    # stride 2 with one pixel of padding on every side: output cell (i, j) centred on input (2i, 2j)
    np.testing.assert_allclose(p6, c5[:, ::2, ::2], atol=1e-6)
    np.testing.assert_allclose(p7, p6[:, ::2, ::2], atol=1e-6)
    assert p7.shape == (1, 1, 1, CH)
    assert (p6 < 0).any()  # negatives survive: no ReLU before P7


def test_p6_reads_the_smoothed_p5_not_c5(fpn_and_inputs):
    fpn, (c3, c4, c5) = fpn_and_inputs
    kernel, bias = fpn.smooth[2].get_weights()
    try:
        fpn.smooth[2].set_weights([2.0 * kernel, bias + 1.0])  # P5 output = 2 C5 + 1
        p5, p6 = [np.asarray(p) for p in fpn([c3, c4, c5])[2:4]]
        np.testing.assert_allclose(p5, 2 * c5 + 1, atol=1e-6)
        np.testing.assert_allclose(p6, (2 * c5 + 1)[:, ::2, ::2], atol=1e-6)
    finally:
        fpn.smooth[2].set_weights([kernel, bias])


def test_fpn_shapes_on_odd_sizes():
    # P6 and P7: 3x3 stride-2 convs padded one pixel on every side, so ceil(n / 2).
    fpn = FPN(channels=5)
    inputs = [
        np.zeros((2, 20, 36, 3), np.float32),
        np.zeros((2, 10, 18, 4), np.float32),
        np.zeros((2, 5, 9, 6), np.float32),
    ]
    outputs = fpn(inputs)
    assert [tuple(p.shape) for p in outputs] == [
        (2, 20, 36, 5),
        (2, 10, 18, 5),
        (2, 5, 9, 5),
        (2, 3, 5, 5),
        (2, 2, 3, 5),
    ]


def test_every_conv_has_a_bias_and_its_own_xavier_uniform_kernel():
    fpn = FPN(channels=16)
    fpn.build([(None, 32, 32, 8), (None, 16, 16, 24), (None, 8, 8, 40)])
    convs = list(fpn.laterals) + list(fpn.smooth) + [fpn.p6, fpn.p7]
    assert len(convs) == 8
    kernels = []
    for conv in convs:
        kernel = np.asarray(conv.kernel)
        k, _, fan_in_channels, fan_out_channels = kernel.shape
        bound = np.sqrt(6.0 / (k * k * (fan_in_channels + fan_out_channels)))
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound, conv.name
        np.testing.assert_array_equal(np.asarray(conv.bias), np.zeros(16))
        kernels.append(kernel)
    same_shape = [(a, b) for a, b in zip(kernels[3:], kernels[4:]) if a.shape == b.shape]  # output_p3.. and p6, p7
    assert same_shape and all(not np.array_equal(a, b) for a, b in same_shape)


def test_fpn_config_round_trip(fpn_and_inputs):
    fpn, inputs = fpn_and_inputs
    config = fpn.get_config()
    assert config["channels"] == CH
    clone = FPN.from_config(config)
    assert clone.get_config() == config
    clone.build([c.shape for c in inputs])
    clone.set_weights(fpn.get_weights())
    for a, b in zip(fpn(list(inputs)), clone(list(inputs))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
