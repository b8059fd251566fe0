"""Training utilities: the reference schedule and optimiser, callbacks, the training loop."""

from keras_gfocal.training.schedules import (
    WarmupStepDecay,
    reference_optimizer,
    reference_schedule,
    scaled_lr,
)

__all__ = ["WarmupStepDecay", "reference_optimizer", "reference_schedule", "scaled_lr"]
