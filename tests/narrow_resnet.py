"""A narrow member of the ResNet family, for tests of BatchNorm folding: fast to build, to run
and to export, with every kind of conv a ResNet-family backbone folds."""

import keras
import numpy as np

from keras_gfocal.layers.resnet import Bottleneck, StemAndStages, _bn, _conv


@keras.saving.register_keras_serializable(package="keras_gfocal_tests")
class NarrowResNet(StemAndStages):
    """A narrow member of the ResNet family (any ``StemAndStages`` with a ``fold_batch_norm``
    argument folds): a stride-4 stem conv + BatchNorm, then one bottleneck per stage, the
    third with grouped deformable 3x3 weights and the fourth a modulated deformable one. With
    ``stem_bias`` the stem conv has a bias of its own before its BatchNorm (the fold's
    general case; no reference backbone has one)."""

    def __init__(self, fold_batch_norm=False, stem_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.fold_batch_norm = folded = fold_batch_norm
        self.stem_bias = stem_bias
        self.stem = _conv(8, 3, 4, "conv1", use_bias=folded or stem_bias) + ([] if folded else [_bn("bn1")])
        self.stem.append(keras.layers.ReLU(name="relu"))
        blocks = (
            dict(strides=1),
            dict(strides=2, inner_width=8, groups=2),
            dict(strides=2, inner_width=16, groups=4, deformable=True),
            dict(strides=2, deformable=True, modulated=True),
        )
        self.stages = [
            [Bottleneck(8, downsample=True, fold_batch_norm=folded, name=f"layer{i + 1}_0", **block)]
            for i, block in enumerate(blocks)
        ]
        self.output_channels = (32, 32, 32)

    def get_config(self):
        return {**super().get_config(), "fold_batch_norm": self.fold_batch_norm, "stem_bias": self.stem_bias}


def randomize(layer, seed=0):
    """BatchNorm statistics and affine weights, deformable offsets and conv biases off their
    initial values."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in ("moving_variance", "gamma"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
        elif name in ("moving_mean", "beta"):
            variable.assign(rng.uniform(-0.5, 0.5, variable.shape))
        elif "conv_offset" in variable.path:
            variable.assign(rng.normal(0.0, 0.1, variable.shape))
        elif name == "bias":
            variable.assign(rng.uniform(-0.5, 0.5, variable.shape))
