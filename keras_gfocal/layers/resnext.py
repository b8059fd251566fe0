"""ResNeXt-50/101 (e.g. 32x4d) as MMDetection builds it: a ResNet with grouped 3x3 convs."""

import math

import keras

from keras_gfocal.layers.resnet import Bottleneck, ResNetBackbone


def resnext_inner_width(width, groups, base_width, base_channels=64):
    """Channels inside a ResNeXt bottleneck of base width ``width``, as MMDetection counts them.

    ``floor(width * base_width / base_channels) * groups``, or ``width`` itself when
    ``groups == 1`` (a plain ResNet). For 32x4d: 128, 256, 512, 1024 in stages 1-4.
    """
    if groups == 1:
        return width
    return math.floor(width * (base_width / base_channels)) * groups


@keras.saving.register_keras_serializable(package="keras_gfocal")
class ResNeXtBackbone(ResNetBackbone):
    """ResNeXt in "pytorch" style returning C3, C4, C5: MMDetection's ``ResNeXt``.

    The ResNet of ``ResNetBackbone`` (stem, stage depths, stride on the 3x3 conv, projection
    shortcut on each stage's first block, freezing, BatchNorm in inference mode) with wider
    bottlenecks whose 3x3 conv is grouped: each bottleneck of base width ``w`` (64 to 512) has
    ``resnext_inner_width(w, groups, base_width)`` channels inside, split in ``groups``
    groups, and outputs ``4 * w`` channels as a ResNet does. The default, 101 32x4d, is the
    backbone of MMDetection's ``gfl_x101-32x4d_fpn_ms-2x_coco`` and of GFocalV2's X101 models.

    Layer names follow MMDetection's state-dict keys with ``_`` for ``.`` (``layer3_5_conv2``
    is ``layer3.5.conv2``); OpenMMLab's ImageNet weights (``open-mmlab://resnext101_32x4d``)
    load through ``keras_gfocal.pretrained.load_backbone_weights``. ``dcn_stages`` and
    ``dcn_modulated`` (keyword arguments of ``ResNetBackbone``) make the grouped 3x3 convs of
    the listed stages deformable, their groups kept (MMDetection's ``dcn``).

    Args:
        depth: 50 or 101.
        groups: the cardinality, groups of every 3x3 conv (32).
        base_width: channels per group in the first stage (4).
        frozen_stages: 0 freezes nothing (BatchNorm statistics stay frozen),
            1 (the reference) freezes the stem and ``layer1``, up to 4.
    Input: ``[B, H, W, 3]`` images normalised with the reference RGB mean/std
        (what OpenMMLab's weights expect), H and W multiples of 32.
    Output: ``[C3, C4, C5]``: ``[B, H/8, W/8, 512]``, ``[B, H/16, W/16, 1024]``,
        ``[B, H/32, W/32, 2048]``.
    """

    def __init__(self, depth=101, groups=32, base_width=4, frozen_stages=1, **kwargs):
        for name, value in (("groups", groups), ("base_width", base_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ResNeXtBackbone {name} must be a positive int, got {value!r}.")
        # make_block reads them while ResNetBackbone builds the stages.
        self.groups = groups
        self.base_width = base_width
        super().__init__(depth=depth, frozen_stages=frozen_stages, **kwargs)

    def make_block(self, stage, width, strides, downsample, name):
        return Bottleneck(
            width,
            strides=strides,
            downsample=downsample,
            inner_width=resnext_inner_width(width, self.groups, self.base_width),
            groups=self.groups,
            **self.dcn_arguments(stage),
            name=name,
        )

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "base_width": self.base_width}
