"""Layers of the GFocal detector."""

from keras_gfocal.layers.backbone import Backbone, TinyBackbone
from keras_gfocal.layers.deformable_conv import DeformableConv2D
from keras_gfocal.layers.dgqp import DGQP
from keras_gfocal.layers.fpn import FPN
from keras_gfocal.layers.gfl_head import GFLHead
from keras_gfocal.layers.group_norm import GroupNormalization
from keras_gfocal.layers.grouped_conv import GroupedConv2D
from keras_gfocal.layers.res2net import Res2NetBackbone
from keras_gfocal.layers.resnet import ResNetBackbone
from keras_gfocal.layers.resnext import ResNeXtBackbone
from keras_gfocal.layers.scale import Scale

__all__ = [
    "DGQP",
    "FPN",
    "Backbone",
    "DeformableConv2D",
    "GFLHead",
    "GroupNormalization",
    "GroupedConv2D",
    "Res2NetBackbone",
    "ResNeXtBackbone",
    "ResNetBackbone",
    "Scale",
    "TinyBackbone",
]
