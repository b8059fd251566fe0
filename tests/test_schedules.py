"""The reference learning-rate schedule against the formula, step by step."""

import keras
import numpy as np

from keras_gfocal.schedules import WarmupStepDecay, reference_schedule, scaled_lr


def _expected(step, base, boundaries, warmup, ratio=0.001):
    lr = base * 0.1 ** sum(step >= b for b in boundaries)
    if step < warmup:
        lr *= 1 - (1 - step / warmup) * (1 - ratio)
    return lr


def test_warmup_then_step_decay():
    schedule = WarmupStepDecay(0.01, [800, 1100], warmup_steps=500)
    for step in [0, 1, 250, 499, 500, 799, 800, 1099, 1100, 5000]:
        np.testing.assert_allclose(
            float(schedule(step)), _expected(step, 0.01, [800, 1100], 500), rtol=1e-6, err_msg=str(step)
        )
    np.testing.assert_allclose(float(schedule(0)), 1e-5, rtol=1e-6)  # 0.001 x lr
    np.testing.assert_allclose(float(schedule(1100)), 1e-4, rtol=1e-6)


def test_linear_scaling_and_reference_epochs():
    assert scaled_lr(16) == 0.01 and scaled_lr(2) == 0.01 / 8
    schedule = reference_schedule(steps_per_epoch=100, global_batch_size=32)
    assert schedule.boundaries == [800, 1100]
    assert schedule.base_lr == 0.02 and schedule.warmup_steps == 266  # capped at a third of 800


def test_schedule_serialises():
    schedule = WarmupStepDecay(0.02, [10, 20], warmup_steps=5)
    config = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(config)
    assert restored.get_config() == schedule.get_config()


_LOAD_WITHOUT_TRAINING = """
import sys
import keras
import keras_gfocal.detector
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
schedule = model.optimizer.get_config()["learning_rate"]
print(schedule["class_name"], schedule["config"]["boundaries"], schedule["config"]["warmup_steps"])
print(sorted(m for m in sys.modules if m.startswith("keras_gfocal.training")))
"""


def test_a_loaded_model_restores_its_schedule_without_importing_training(tmp_path):
    import subprocess
    import sys

    from keras_gfocal import GFocalDetector
    from keras_gfocal.schedules import reference_optimizer

    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, backbone_weights=None)
    model.compile(optimizer=reference_optimizer(WarmupStepDecay(0.01, [30, 40], warmup_steps=7)))
    model(np.zeros((1, 64, 64, 3), "float32"))
    path = str(tmp_path / "m.keras")
    model.save(path)
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_TRAINING, path],
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.stdout.splitlines()[-2:] == ["WarmupStepDecay [30, 40] 7", "[]"], out.stdout + out.stderr
