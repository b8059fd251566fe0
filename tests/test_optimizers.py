"""``TorchSGD`` computes what ``torch.optim.SGD`` computes (no torch needed here).

The hand case below was worked out on paper from torch's documented rule
(``g' = g + wd * w``, ``v = mu * v + g'``, ``w = w - lr * v``) and gives the same
digits as ``torch.optim.SGD([w], lr, momentum=0.5, weight_decay=0.1)`` with the
rate set before each step.
"""

import keras
import numpy as np
import pytest

from keras_gfocal.optimizers import TorchSGD
from keras_gfocal.schedules import WarmupStepDecay, reference_optimizer


class _RateTable(keras.optimizers.schedules.LearningRateSchedule):
    """The rate of step t is ``rates[t]``."""

    def __init__(self, rates):
        self.rates = list(rates)

    def __call__(self, step):
        return keras.ops.take(keras.ops.convert_to_tensor(self.rates, "float32"), keras.ops.cast(step, "int32"))

    def get_config(self):
        return {"rates": self.rates}


def _run(optimizer, w0, gradients):
    variable = keras.Variable(np.asarray(w0, "float32"))
    seen = []
    for g in gradients:
        optimizer.apply([np.asarray(g, "float32")], [variable])
        seen.append(np.asarray(variable.numpy(), np.float64))
    return seen


def test_reference_optimizer_takes_the_hand_computed_torch_steps_with_a_changing_rate():
    # mu = 0.5, wd = 0.1, rates 0.1, 0.2, 0.4; w0 = [1, -2].
    # step 1: g' = [1, 0] + 0.1 w = [1.1, -0.2];            v = g' (first step)  = [1.1, -0.2]
    #         w = w - 0.1 v = [0.89, -1.98]
    # step 2: g' = [0, 1] + 0.1 w = [0.089, 0.802];         v = 0.5 v + g' = [0.639, 0.702]
    #         w = w - 0.2 v = [0.7622, -2.1204]
    # step 3: g' = [-1, 2] + 0.1 w = [-0.92378, 1.78796];   v = 0.5 v + g' = [-0.60428, 2.13896]
    #         w = w - 0.4 v = [1.003912, -2.975984]
    optimizer = reference_optimizer(_RateTable([0.1, 0.2, 0.4]), momentum=0.5, weight_decay=0.1)
    assert isinstance(optimizer, TorchSGD)
    steps = _run(optimizer, [1.0, -2.0], [[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0]])
    np.testing.assert_allclose(steps[0], [0.89, -1.98], rtol=1e-6)
    np.testing.assert_allclose(steps[1], [0.7622, -2.1204], rtol=1e-6)
    np.testing.assert_allclose(steps[2], [1.003912, -2.975984], rtol=1e-6)
    np.testing.assert_allclose(optimizer.velocities[0].numpy(), [-0.60428, 2.13896], rtol=1e-5)


def test_keras_sgd_takes_other_steps_on_the_same_case():
    # Why the project has its own optimiser: Keras' SGD on the hand case above.
    keras_sgd = keras.optimizers.SGD(learning_rate=_RateTable([0.1, 0.2, 0.4]), momentum=0.5, weight_decay=0.1)
    steps = _run(keras_sgd, [1.0, -2.0], [[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0]])
    assert np.max(np.abs(steps[2] - [1.003912, -2.975984])) > 0.05


def _numpy_torch_sgd(w, gradients, rates, momentum, weight_decay):
    """torch.optim.SGD's rule in float64, one step per (gradient, rate)."""
    w = np.asarray(w, np.float64).copy()
    v = np.zeros_like(w)
    for g, lr in zip(gradients, rates):
        v = momentum * v + (g + weight_decay * w)
        w = w - lr * v
    return w


def test_the_reference_schedule_and_decay_follow_the_numpy_rule_through_warm_up_and_a_decay():
    rng = np.random.RandomState(3)
    schedule = WarmupStepDecay(0.01, [40], warmup_steps=25)
    optimizer = reference_optimizer(schedule)
    w0 = rng.standard_normal(6)
    gradients = rng.standard_normal((60, 6))
    got = _run(optimizer, w0, gradients)[-1]
    rates = [float(schedule(t)) for t in range(60)]
    expected = _numpy_torch_sgd(w0, gradients, rates, 0.9, 1e-4)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_decay_alone_shrinks_a_weight_about_ten_times_as_fast_as_keras_sgd():
    # 300 zero-gradient steps at lr 0.01, wd 0.01: torch's decay goes through the
    # momentum, so once the buffer has filled it acts 1 / (1 - 0.9) = 10 times per step.
    zeros = np.zeros((300, 1))
    got = _run(TorchSGD(0.01, momentum=0.9, weight_decay=0.01), [1.0], zeros)[-1]
    np.testing.assert_allclose(got, _numpy_torch_sgd([1.0], zeros, [0.01] * 300, 0.9, 0.01), rtol=1e-5)
    keras_got = _run(keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=0.01), [1.0], zeros)[-1]
    np.testing.assert_allclose(keras_got, (1.0 - 0.01 * 0.01) ** 300, rtol=1e-5)  # Keras: w *= 1 - lr * wd
    assert 8.5 < np.log(got[0]) / np.log(keras_got[0]) < 10.0


def test_no_momentum_and_no_decay_is_plain_gradient_descent_without_a_buffer():
    optimizer = TorchSGD(0.5, momentum=0.0, weight_decay=0.0)
    steps = _run(optimizer, [1.0, 2.0], [[1.0, -1.0], [2.0, 0.0]])
    np.testing.assert_allclose(steps[-1], [1.0 - 0.5 - 1.0, 2.0 + 0.5], rtol=1e-7)
    assert optimizer.velocities == []  # no state to save beyond the step count


def test_the_defaults_are_the_reference_settings():
    optimizer = TorchSGD()
    assert (float(optimizer.learning_rate), optimizer.momentum, optimizer.l2_weight_decay) == (
        np.float32(0.01),
        0.9,
        1e-4,
    )
    assert optimizer.name == "torch_sgd" and optimizer.weight_decay is None


def test_the_base_optimizer_arguments_still_apply():
    # global_clipnorm 1 scales the gradient [3, 4] (norm 5) to [0.6, 0.8] before the rule.
    optimizer = TorchSGD(1.0, momentum=0.0, weight_decay=0.0, global_clipnorm=1.0, name="clipped")
    np.testing.assert_allclose(_run(optimizer, [0.0, 0.0], [[3.0, 4.0]])[0], [-0.6, -0.8], rtol=1e-6)
    assert optimizer.name == "clipped"


@pytest.mark.parametrize("kwargs", [{"momentum": 1.0}, {"momentum": -0.1}, {"weight_decay": -1e-4}])
def test_bad_hyperparameters_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TorchSGD(0.01, **kwargs)


def test_config_round_trip_keeps_the_coupled_decay():
    optimizer = TorchSGD(WarmupStepDecay(0.02, [10], warmup_steps=5), momentum=0.8, weight_decay=3e-4)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, TorchSGD)
    assert restored.momentum == 0.8 and restored.l2_weight_decay == 3e-4 and restored.weight_decay is None
    assert restored.get_config()["learning_rate"] == optimizer.get_config()["learning_rate"]


def test_a_saved_model_resumes_with_its_velocity(tmp_path):
    # Three steps in one go equal two steps, a save and load, and one more step.
    rng = np.random.RandomState(0)
    x = rng.standard_normal((8, 3)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")

    def model():
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="ones")])
        m.compile(optimizer=TorchSGD(_RateTable([0.1, 0.05, 0.2]), momentum=0.9, weight_decay=0.01), loss="mse")
        return m

    straight = model()
    for _ in range(3):
        straight.train_on_batch(x, y)
    resumed = model()
    for _ in range(2):
        resumed.train_on_batch(x, y)
    path = str(tmp_path / "m.keras")
    resumed.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"_RateTable": _RateTable})
    assert isinstance(loaded.optimizer, TorchSGD) and int(loaded.optimizer.iterations) == 2
    loaded.train_on_batch(x, y)
    for a, b in zip(straight.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
