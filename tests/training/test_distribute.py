"""Two replicas train exactly like one device on the same global batch: under
MirroredStrategy (two logical CPUs) and MultiWorkerMirroredStrategy (two
worker processes on loopback)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

SCRIPT = os.path.join(os.path.dirname(__file__), "mirrored_step.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _report(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def _check(report):
    assert report["replicas"] == 2
    for key in ("loss", "qfl", "giou", "dfl"):
        np.testing.assert_allclose(report["distributed"][key], report["single"][key], rtol=1e-5, err_msg=key)
    # The gradient step: every trainable variable moves by the same amount
    # (difference norm / step norm, per variable; float32 summation order only).
    assert report["num_variables"] > 50 and report["max_abs_delta"] > 1e-3
    assert report["max_relative_weight_delta_difference"] < 1e-4
    # Normalising per replica instead of across replicas would have changed the
    # loss by far more than the tolerance above: the check has teeth.
    assert abs(report["per_replica_normaliser_loss"] - report["single"]["loss"]) > 0.01 * report["single"]["loss"]


def test_mirrored_two_devices_match_one_device():
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    _check(_report(out.stdout))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_two_processes_match_one_device():
    ports = [str(p) for p in _free_ports(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "worker", str(i), *ports],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=300)
            assert worker.returncode == 0, stderr[-3000:]
            outputs.append(_report(stdout))
    finally:
        for worker in workers:
            worker.kill()
    for report in outputs:
        _check(report)
    # Both workers took the same step.
    assert outputs[0]["distributed"] == outputs[1]["distributed"]
