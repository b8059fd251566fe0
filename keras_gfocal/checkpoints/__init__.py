"""Checkpoints from PyTorch: a safe ``.pth`` reader and converters to Keras.

`read_state_dict` reads a ``torch.save`` file without torch and without
running code from it; `convert_checkpoint` turns an MMDetection-layout GFocal
checkpoint into a `GFocalDetector`; `load_resnet_weights` loads torchvision
ResNet weights into a `keras_gfocal.layers.ResNetBackbone`.
"""

from keras_gfocal.checkpoints.mapping import CheckpointMismatchError
from keras_gfocal.checkpoints.mmdet import convert_checkpoint
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
    "convert_checkpoint",
    "load_pth",
    "load_resnet_weights",
    "read_state_dict",
]
