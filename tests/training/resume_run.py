"""A small ``keras_gfocal.training.train`` run that can kill itself partway.

    python resume_run.py DATA_DIR RUN_DIR [KILL_AT_EPOCH]

With KILL_AT_EPOCH, the process dies (os._exit, no clean-up, like a killed job)
when that epoch (0-based) begins. Prints one JSON line: the epochs this process
started and the optimizer's step count at the end.
"""

import json
import os
import sys

import keras

from keras_gfocal.training.loop import train

data, run = sys.argv[1], sys.argv[2]
kill_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
started = []


class Recorder(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == kill_at:
            os._exit(17)
        started.append(epoch)


model, _ = train(
    f"{data}/annotations/instances_train.json",
    f"{data}/train",
    preset="gfocal_v2_tiny",
    model_kwargs={"stacked_convs": 1},  # a smaller graph traces faster; resuming is what is tested
    epochs=4,
    batch_size=4,
    image_size=(64, 64),
    out=run,
    warmup_steps=2,
    seed=0,
    verbose=0,
    extra_callbacks=[Recorder()],
)
print(json.dumps({"started": started, "iterations": int(model.optimizer.iterations.numpy())}))
