"""Frozen BatchNorms folded into their convs: the same outputs from fewer passes.

Every backbone gets BatchNorm statistics and affine weights far from their
initial values (means and shifts of +-0.5, variances and scales in 0.5..1.5)
and, where it deforms, non-zero offsets; the folded form must then give the
unfolded one's maps to float rounding, and its weights must be the fold
formula applied in NumPy here.
"""

import keras
import numpy as np
import pytest
from narrow_resnet import NarrowResNet, randomize

from keras_gfocal.layers import Res2NetBackbone, ResNetBackbone, ResNeXtBackbone, TinyBackbone
from keras_gfocal.layers.batch_norm_folding import can_fold, fold_batch_norms


def built(backbone, size=64):
    backbone.build((None, size, size, 3))
    randomize(backbone)
    return backbone


def batch_norms(layer):
    return [sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)]


def float64_twin(backbone):
    """The same backbone computing in float64: the exact maps both float32 forms round."""
    keras.config.set_dtype_policy("float64")
    try:
        twin = type(backbone).from_config({**backbone.get_config(), "dtype": "float64"})
        twin.build((None, None, None, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    for source, target in zip(backbone.weights, twin.weights, strict=True):
        target.assign(source.numpy().astype("float64"))
    return twin


def assert_same_maps(got, expected, exact=None):
    """``got`` (folded) equals ``expected`` (unfolded) to float rounding: each map within
    1e-5 of its largest value, or, given the ``exact`` float64 maps, as close to them as the
    unfolded float32 maps are: an RMS error at most twice theirs and a largest error at most
    four times theirs (deep random backbones amplify rounding, in both forms alike; the
    largest of a few hundred thousand errors varies more from one summation order to another
    than their RMS)."""
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        g, e = np.asarray(g, "float64"), np.asarray(e, "float64")
        if exact is None:
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-5 * np.abs(e).max())
        else:
            truth = np.asarray(exact[index])
            floor = 1e-7 * np.abs(truth).max()
            rms = lambda error: np.sqrt(np.mean(np.square(error)))  # noqa: E731
            assert rms(g - truth) <= 2 * rms(e - truth) + floor
            assert np.abs(g - truth).max() <= 4 * np.abs(e - truth).max() + floor


@pytest.mark.parametrize(
    "make",
    [
        lambda: NarrowResNet(),
        lambda: ResNetBackbone(50),
        lambda: ResNeXtBackbone(50, dcn_stages=(3,)),
        lambda: Res2NetBackbone(50, dcn_stages=(4,), dcn_modulated=True),
    ],
    ids=["narrow-dcn-grouped", "resnet50", "resnext50-dcn", "res2net50-dcnv2"],
)
def test_folded_backbone_gives_the_same_maps(make):
    backbone = built(make())
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    folded = fold_batch_norms(backbone)
    assert type(folded) is type(backbone) and folded.fold_batch_norm and folded.get_config()["fold_batch_norm"]
    assert batch_norms(backbone) and not batch_norms(folded)
    assert all(conv.use_bias for conv, norm in folded.conv_batch_norm_pairs())
    assert all(norm is None for _, norm in folded.conv_batch_norm_pairs())
    assert_same_maps(folded(images), backbone(images), exact=float64_twin(backbone)(images.astype("float64")))


def test_folded_weights_are_the_fold_formula():
    backbone = built(NarrowResNet(stem_bias=True))
    folded = fold_batch_norms(backbone)
    # A conv with a bias of its own: the bias is scaled too, then shifted.
    conv, bn, target = backbone.stem[1], backbone.stem[2], folded.stem[1]
    s = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + 1e-5)
    expected_bias = conv.bias.numpy() * s + bn.beta.numpy() - bn.moving_mean.numpy() * s
    assert np.abs(conv.bias.numpy()).min() > 0
    np.testing.assert_allclose(target.bias.numpy(), expected_bias, rtol=1e-6, atol=1e-7)
    conv, bn = backbone.stages[2][0].conv2, backbone.stages[2][0].bn2
    target = folded.stages[2][0].conv2
    s = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + 1e-5)
    np.testing.assert_allclose(target.kernel.numpy(), conv.kernel.numpy() * s[None, None, None, :], rtol=1e-6)
    np.testing.assert_allclose(target.bias.numpy(), bn.beta.numpy() - bn.moving_mean.numpy() * s, rtol=1e-6, atol=1e-7)
    # The deformable conv's offsets are copied, not folded.
    np.testing.assert_array_equal(target.conv_offset.kernel.numpy(), conv.conv_offset.kernel.numpy())


def test_refolding_into_an_earlier_form_takes_the_new_weights():
    backbone = built(NarrowResNet())
    images = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype("float32")
    folded = fold_batch_norms(backbone)
    randomize(backbone, seed=5)
    assert fold_batch_norms(backbone, into=folded) is folded
    assert_same_maps(folded(images), backbone(images))


class FoldingDropsAConv(NarrowResNet):
    """A backbone whose folded form lists one conv fewer: a ``conv_batch_norm_pairs`` bug."""

    def conv_batch_norm_pairs(self):
        pairs = super().conv_batch_norm_pairs()
        return pairs[:-1] if self.fold_batch_norm else pairs


def test_what_cannot_fold_is_named():
    with pytest.raises(ValueError, match=r"17 convs against 16 in its folded form"):
        fold_batch_norms(built(FoldingDropsAConv()))
    tiny = TinyBackbone()
    tiny.build((None, 64, 64, 3))
    assert not can_fold(tiny)
    with pytest.raises(ValueError, match="TinyBackbone.*no BatchNorm to fold"):
        fold_batch_norms(tiny)
    assert not can_fold(fold_batch_norms(built(NarrowResNet())))
    with pytest.raises(ValueError, match="needs a built backbone"):
        fold_batch_norms(NarrowResNet())
