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
