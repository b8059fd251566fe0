"""A killed training run resumes from its last finished epoch, not from zero."""

import csv
import json
import os
import subprocess
import sys

from keras_gfocal.data import make_synthetic_coco

HERE = os.path.dirname(__file__)


def _run(data, run, *kill_at):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, os.path.join(HERE, "resume_run.py"), data, run, *map(str, kill_at)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_killed_run_resumes_where_it_stopped(tmp_path):
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    make_synthetic_coco(data, num_train=16, num_val=0, image_size=(64, 64), min_size=12)
    steps_per_epoch = 16 // 4

    killed = _run(data, run, 2)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["epoch_001.keras", "epoch_002.keras"]
    assert not os.path.exists(os.path.join(run, "model.keras"))

    resumed = _run(data, run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(resumed.stdout.strip().splitlines()[-1])
    # Epochs 0 and 1 were done before the kill; the second process starts at 2.
    assert report["started"] == [2, 3]
    # The optimizer step (and with it the learning-rate schedule) carried over.
    assert report["iterations"] == 4 * steps_per_epoch
    with open(os.path.join(run, "log.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2, 3]
    assert os.path.exists(os.path.join(run, "model.keras"))
