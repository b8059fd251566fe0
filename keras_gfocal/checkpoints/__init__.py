"""Checkpoints from PyTorch: a safe ``.pth`` reader and the maps from PyTorch
names to Keras variables.

``read_state_dict`` reads a ``torch.save`` file without torch and without
running code from it; ``load_resnet_weights`` loads torchvision ResNet weights
into a ``keras_gfocal.layers.ResNetBackbone``; ``keras_gfocal.checkpoints.mmdet``
maps MMDetection-layout GFocal checkpoints onto a ``GFocalDetector`` (built by
``keras_gfocal.convert.convert_checkpoint``). Nothing here imports the layers or
the model: the maps read the objects they are given.
"""

from keras_gfocal.checkpoints.mapping import CheckpointMismatchError
from keras_gfocal.checkpoints.pth import (
    CheckpointError,
    UnsafeCheckpointError,
    load_pth,
    read_state_dict,
)
from keras_gfocal.checkpoints.torchvision import load_resnet_weights

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "load_pth",
    "load_resnet_weights",
    "read_state_dict",
]
