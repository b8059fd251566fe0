"""``TorchSGD``: stochastic gradient descent with ``torch.optim.SGD``'s update rule.

The reference trains with ``torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-4)``.
Keras' own ``SGD`` computes a different step on both of its halves:

* decay: Keras shrinks the weight outside the momentum (``w -= lr * wd * w``,
  decoupled); torch adds ``wd * w`` to the gradient before the momentum (L2,
  coupled), so at momentum 0.9 torch's decay acts 1 / (1 - 0.9) = 10 times as
  strongly;
* momentum: Keras keeps learning rates inside its buffer (``m = mu * m - lr * g``);
  torch keeps raw gradients (``v = mu * v + g``) and multiplies the whole
  buffer by today's rate, so the two differ whenever the rate changes (the
  500 warm-up iterations, each decay step).

Measured on the whole detector over 6 warm-up steps, Keras' SGD moved every
weight about a third as far as the reference; ``TorchSGD`` moves it the same.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_gfocal")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and L2 weight decay, computed as ``torch.optim.SGD`` computes it.

    For each trainable variable ``w`` with gradient ``g`` at a step whose rate is ``lr``::

        g' = g + weight_decay * w          # L2 decay, coupled: it goes through the momentum
        v  = momentum * v + g'             # v starts at 0, so the first step sets v = g'
        w  = w - lr * v                    # today's rate multiplies the whole buffer

    (torch's defaults ``dampening=0`` and ``nesterov=False``). Decay applies to
    every variable the optimizer updates (biases, norm scales and shifts, the
    per-level scales), as the reference has no parameter groups. The state is
    one float32 buffer per variable; it is saved with the model, so a resumed
    ``fit`` continues the same sequence. Under ``mixed_float16`` Keras wraps
    it in a ``LossScaleOptimizer``, which unscales the gradients before they
    reach ``update_step``.

    Args:
        learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule``
            (``keras_gfocal.schedules.reference_schedule``).
        momentum: ``mu`` in [0, 1); 0 is plain gradient descent with L2 decay.
        weight_decay: the L2 coefficient ``wd`` (torch's ``weight_decay``), >= 0.
            It is not Keras' decoupled ``weight_decay``, which this optimizer
            never applies.
        **kwargs: the other arguments of ``keras.optimizers.Optimizer``
            (``clipnorm``, ``name``, ...).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay=1e-4, name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=None, name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        if float(weight_decay) < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
        self.momentum = float(momentum)
        # Not ``self.weight_decay``: the base class would apply that one decoupled.
        self.l2_weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity") if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(gradient, variable.dtype)
        if self.l2_weight_decay:
            step = ops.add(step, ops.multiply(ops.cast(self.l2_weight_decay, variable.dtype), variable))
        if self.momentum:
            velocity = self.velocities[self._get_variable_index(variable)]
            self.assign(velocity, ops.add(ops.multiply(velocity, ops.cast(self.momentum, variable.dtype)), step))
            step = velocity
        self.assign_sub(variable, ops.multiply(learning_rate, step))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.l2_weight_decay})
        return config
