"""The reference learning-rate schedule (linear warm-up, then step decay) and its optimiser."""

import keras
from keras import ops

from keras_gfocal.optimizers import TorchSGD

REFERENCE_BASE_LR = 0.01
REFERENCE_BATCH_SIZE = 16


@keras.saving.register_keras_serializable(package="keras_gfocal")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_ratio * base_lr``, then ``x decay_rate`` at each boundary.

    During warm-up (step ``t < warmup_steps``) the rate is
    ``base_lr * (1 - (1 - t / warmup_steps) * (1 - warmup_ratio))``, the
    reference's linear warm-up as the official code (mmcv 1.x) computes it;
    afterwards ``base_lr * decay_rate ** k`` with ``k`` the number of
    boundaries passed. (MMDetection 3.3's ``LinearLR`` instead reaches the full
    rate at ``t = warmup_steps - 1``, up to 0.2 % higher during warm-up; the
    official formula is kept.) ``t`` is the optimizer's iteration count, which
    is 0 at the first step, as the reference's iteration counter.

    Args:
        base_lr: rate after warm-up.
        boundaries: python ints, the steps at which the rate drops.
        warmup_steps: length of the warm-up (500 in the reference).
        warmup_ratio: starting fraction of ``base_lr`` (0.001).
        decay_rate: factor applied at each boundary (0.1).
    """

    def __init__(self, base_lr, boundaries, warmup_steps=500, warmup_ratio=0.001, decay_rate=0.1):
        self.base_lr = float(base_lr)
        self.boundaries = [int(b) for b in boundaries]
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
        lr = self.base_lr * ops.power(self.decay_rate, passed)
        if self.warmup_steps > 0:
            progress = ops.minimum(step / self.warmup_steps, 1.0)
            # = 1 - (1 - progress) * (1 - ratio), written so float32 keeps 0.001 exact.
            lr = lr * (self.warmup_ratio + (1.0 - self.warmup_ratio) * progress)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "boundaries": self.boundaries,
            "warmup_steps": self.warmup_steps,
            "warmup_ratio": self.warmup_ratio,
            "decay_rate": self.decay_rate,
        }


def scaled_lr(global_batch_size, base_lr=REFERENCE_BASE_LR, base_batch_size=REFERENCE_BATCH_SIZE):
    """The linear scaling rule: ``base_lr * global_batch_size / base_batch_size``."""
    return base_lr * global_batch_size / base_batch_size


def reference_schedule(steps_per_epoch, global_batch_size=16, decay_epochs=(8, 11), warmup_steps=500, base_lr=None):
    """The reference 1x schedule (decay at epochs 8 and 11) for a given batch size.

    ``base_lr`` defaults to 0.01 scaled linearly from a global batch of 16; the
    warm-up is capped at a third of the first decay so short runs still decay.
    """
    lr = scaled_lr(global_batch_size) if base_lr is None else base_lr
    boundaries = [int(e * steps_per_epoch) for e in decay_epochs]
    if boundaries:
        warmup_steps = min(warmup_steps, max(boundaries[0] // 3, 0))
    return WarmupStepDecay(lr, boundaries, warmup_steps=warmup_steps)


def reference_optimizer(schedule, momentum=0.9, weight_decay=1e-4):
    """The reference's optimiser: ``torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-4)``.

    A ``keras_gfocal.optimizers.TorchSGD`` (L2 decay through the momentum, raw
    gradients in the buffer), not Keras' ``SGD``, whose decoupled decay and
    rate-scaled buffer moved the detector's weights a third as far over the
    warm-up. Decay applies to every trainable weight.

    Args:
        schedule: a rate or schedule, e.g. ``reference_schedule(...)``.
        momentum, weight_decay: torch's ``momentum`` and ``weight_decay``.
    """
    return TorchSGD(learning_rate=schedule, momentum=momentum, weight_decay=weight_decay)
