"""MirroredStrategy on two logical CPU devices trains exactly like one device."""

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(__file__)


def test_two_replicas_match_one_device_on_the_same_global_batch():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "mirrored_step.py")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for key in ("loss", "qfl", "giou", "dfl"):
        np.testing.assert_allclose(report["mirrored"][key], report["single"][key], rtol=1e-5, err_msg=key)
    # The gradient step: every trainable variable moves by the same amount
    # (difference norm / step norm, per variable; float32 summation order only).
    assert report["num_variables"] > 50 and report["max_abs_delta"] > 1e-3
    assert report["max_relative_weight_delta_difference"] < 1e-4
    # Normalising per replica instead of across replicas would have changed the
    # loss by far more than the tolerance above: the check has teeth.
    assert abs(report["per_replica_normaliser_loss"] - report["single"]["loss"]) > 0.01 * report["single"]["loss"]
