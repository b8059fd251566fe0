"""One training step on a global batch of 4, on one device and on two replicas.

    python mirrored_step.py                      # MirroredStrategy, 2 logical CPUs
    python mirrored_step.py worker INDEX PORT0 PORT1
        # one of two MultiWorkerMirroredStrategy workers on loopback

Run as a script, because the strategy must be set up before TensorFlow runs
anything; prints a JSON report that tests/training/test_distribute.py checks.
"""

import json
import os
import sys

import tensorflow as tf

if sys.argv[1:2] == ["worker"]:
    index, ports = int(sys.argv[2]), sys.argv[3:5]
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )
    DISTRIBUTED = tf.distribute.MultiWorkerMirroredStrategy()
else:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    DISTRIBUTED = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

import keras
import numpy as np

from keras_gfocal import GFocalDetector
from keras_gfocal.schedules import reference_optimizer

SIZE = 64
# One conv per head tower: the check is about replicas, and a smaller graph traces faster.
MODEL = {"stacked_convs": 1}


def batch():
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (4, SIZE, SIZE, 3)).astype("float32")
    boxes = np.zeros((4, 3, 4), "float32")
    labels = -np.ones((4, 3), "int32")
    # Images 0-1 (replica 0) hold one box each, images 2-3 (replica 1) three:
    # the replicas see different numbers of positives.
    layout = {0: 1, 1: 1, 2: 3, 3: 3}
    # Image 1 is a 30 x 28 image padded into the 64 x 64 batch: the points
    # beyond its own padded 32 x 32 take no part in the loss (y["image_size"]).
    image_size = np.array([[SIZE, SIZE], [30, 28], [SIZE, SIZE], [SIZE, SIZE]], "int32")
    for i, count in layout.items():
        for j in range(count):
            # Small boxes on replica 0, large ones on replica 1, so the mean
            # loss per positive differs between the replicas too.
            w, h = rng.uniform(6, 10, 2) if count == 1 else rng.uniform(24, 40, 2)
            x1, y1 = rng.uniform(0, image_size[i, 1] - w), rng.uniform(0, image_size[i, 0] - h)
            boxes[i, j] = [x1, y1, x1 + w, y1 + h]
            labels[i, j] = j % 2
    return images, {"boxes": boxes, "labels": labels, "image_size": image_size}


def one_step(strategy, weights, images, targets):
    with strategy.scope():
        model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, **MODEL)
        model.build((None, SIZE, SIZE, 3))
        model.set_weights(weights)
        # The reference optimiser (TorchSGD) at rate 1: its first step is -(gradient + 1e-4 w),
        # taken once from the gradient summed over the replicas.
        model.compile(optimizer=reference_optimizer(1.0))
    before = [w.numpy().copy() for w in model.trainable_weights]
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    deltas = [w.numpy() - b for w, b in zip(model.trainable_weights, before)]
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    return logs, deltas, model


def main():
    images, targets = batch()
    keras.utils.set_random_seed(0)
    reference = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, **MODEL)
    reference.build((None, SIZE, SIZE, 3))
    weights = reference.get_weights()

    distributed_logs, distributed_deltas, _ = one_step(DISTRIBUTED, weights, images, targets)
    single_logs, single_deltas, single_model = one_step(tf.distribute.get_strategy(), weights, images, targets)

    # What per-replica normalisers would have given: each half's loss with its
    # own positives count, averaged. It must differ for the check to have teeth.
    single_model.set_weights(weights)
    single_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    halves = [
        single_model.test_on_batch(images[s], {k: v[s] for k, v in targets.items()}, return_dict=True)
        for s in (slice(0, 2), slice(2, 4))
    ]
    per_replica_loss = float(np.mean([h["loss"] for h in halves]))

    # Per variable, the size of the difference relative to the size of the step
    # (norms, so that one tiny entry's float32 rounding does not dominate). A
    # variable whose gradient nearly cancels (a step 1e-6 of the largest)
    # still carries the rounding of the large terms that cancel, so steps are
    # measured against at least 1e-4 of the largest step: a replica that is
    # dropped, doubled or normalised on its own moves every variable by far more.
    norms = [np.linalg.norm(a) for a in single_deltas]
    floor = 1e-4 * max(norms)
    rel = [
        float(np.linalg.norm(a - b) / max(norm, floor)) for a, b, norm in zip(single_deltas, distributed_deltas, norms)
    ]
    max_rel = max(rel)
    report = {
        "replicas": DISTRIBUTED.num_replicas_in_sync,
        "single": single_logs,
        "distributed": distributed_logs,
        "per_replica_normaliser_loss": per_replica_loss,
        "max_relative_weight_delta_difference": max_rel,
        "max_abs_delta": float(max(np.max(np.abs(d)) for d in single_deltas)),
        "num_variables": len(single_deltas),
        "relative_differences": rel,
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
