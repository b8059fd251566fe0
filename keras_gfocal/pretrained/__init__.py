"""Pretrained backbone weights, converted from the names they were published under.

A floor above the layers and below the model: each module here imports the backbone whose
variables it fills, and ``GFocalDetector.from_preset`` loads a preset's ImageNet weights
through ``load_backbone_weights``. The backbones themselves import nothing from here.
"""

from keras_gfocal.pretrained.backbones import backbone_rows, load_backbone_weights
from keras_gfocal.pretrained.res2net import load_res2net_weights
from keras_gfocal.pretrained.torchvision import load_resnet_weights

__all__ = ["backbone_rows", "load_backbone_weights", "load_res2net_weights", "load_resnet_weights"]
