"""The gfocal command's start: ``--help`` and argument errors without TensorFlow, then a quiet TensorFlow.

Each test runs the installed ``gfocal`` script in a fresh interpreter, as a user does.
"""

import os
import subprocess
import sys

import pytest

GFOCAL = os.path.join(os.path.dirname(sys.executable), "gfocal")


def _imported_modules(importtime_log):
    """The modules a ``python -X importtime`` run imported, read off its stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "argv, status, answer",
    [
        (["--help"], 0, "usage: gfocal [-h] COMMAND"),
        (["train", "--help"], 0, "usage: gfocal train [-h] --train-ann TRAIN_ANN"),
        (
            ["export", "--model", "m.keras", "--format", "bogus"],
            2,
            "gfocal export: error: argument --format: invalid choice: 'bogus'",
        ),
    ],
    ids=["help", "train-help", "bad-argument"],
)
def test_help_and_argument_errors_import_no_tensorflow(argv, status, answer):
    run = subprocess.run(
        [sys.executable, "-X", "importtime", GFOCAL, *argv], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == status, run.stderr
    assert answer in run.stdout + run.stderr
    modules = _imported_modules(run.stderr)
    assert "keras_gfocal.cli" in modules  # the import log was read
    assert sorted(m for m in modules if m.split(".")[0] in ("tensorflow", "keras")) == []


def _synth(tmp_path, env):
    """``gfocal synth`` of two tiny images (a command that imports TensorFlow): the finished process."""
    command = [GFOCAL, "synth", str(tmp_path / "data"), "--num-train", "1", "--num-val", "1", "--image-size", "32"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"Synthetic COCO dataset written to {tmp_path / 'data'}:")
    return run


def test_tensorflow_start_up_lines_are_quiet_unless_the_user_sets_the_level(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    assert _synth(tmp_path, env).stderr == ""
    # The user's level is theirs: at 0, TensorFlow 2.21 on x86 prints its oneDNN notice (before its log
    # reads the level) and the CPU-feature notice (only at level 0), as without the command.
    shown = _synth(tmp_path, dict(env, TF_CPP_MIN_LOG_LEVEL="0")).stderr
    assert "oneDNN custom operations are on" in shown
    assert "cpu_feature_guard.cc" in shown


_OPEN_IN_A_FRESH_INTERPRETER = """
import sys
from keras_gfocal.export import load_detector
assert "keras_gfocal.detector" not in sys.modules, "the import alone registered the classes"
print(type(load_detector(sys.argv[1]).model).__name__)
"""


def test_the_model_opener_registers_the_classes_itself(tmp_path):
    # The package root imports GFocalDetector on first use only, so ``import keras_gfocal`` no longer
    # registers the classes with Keras: the opener every command uses must import them itself.
    from keras_gfocal import GFocalDetector

    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=1, image_size=(32, 32))
    model.build((None, 32, 32, 3))
    path = str(tmp_path / "model.keras")
    model.save(path)
    run = subprocess.run(
        [sys.executable, "-c", _OPEN_IN_A_FRESH_INTERPRETER, path], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "GFocalDetector\n"
