"""PyTorch checkpoints read without torch, and assigned to Keras variables all or nothing.

``read_state_dict`` reads a ``torch.save`` file without torch and without
running code from it; ``keras_gfocal.checkpoints.mapping`` assigns a state dict
along ``(checkpoint key, variable, transform)`` rows, checking every row before
it writes anything. Nothing here knows a model: the rows that name a model's
variables are written by the converters above it, ``keras_gfocal.pretrained``
(backbones) and ``keras_gfocal.convert`` (whole detectors).
"""

from keras_gfocal.checkpoints.mapping import CheckpointMismatchError
from keras_gfocal.checkpoints.pth import (
    CheckpointError,
    UnsafeCheckpointError,
    load_pth,
    read_state_dict,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "load_pth",
    "read_state_dict",
]
