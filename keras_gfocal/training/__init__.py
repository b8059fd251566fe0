"""Training utilities: the reference schedule and optimiser, callbacks, the training loop.

The schedule and optimiser are defined in ``keras_gfocal.schedules``, below the
model, so that a loaded model can restore its optimiser without importing
training; they are named here too, beside the loop that uses them.
"""

from keras_gfocal.schedules import (
    WarmupStepDecay,
    reference_optimizer,
    reference_schedule,
    scaled_lr,
)

__all__ = ["WarmupStepDecay", "reference_optimizer", "reference_schedule", "scaled_lr"]
