"""CocoEvalCallback's schedule: every n epochs and always after the last, with real pycocotools.

The callback runs on a tiny untrained model over a 2-image synthetic split (its AP is 0, which
is fine: the test is about *when* it evaluates and what it writes, not the number)."""

import json

import numpy as np

from keras_gfocal import GFocalDetector
from keras_gfocal.data import CocoDataset, make_dataset, make_synthetic_coco
from keras_gfocal.training.callbacks import CocoEvalCallback


def test_evaluates_every_n_epochs_and_after_the_last(tmp_path):
    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=0, num_val=2, image_size=(64, 64), seed=1)
    coco = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    batches = make_dataset(coco, training=False, batch_size=2, image_size=(64, 64))
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, image_size=(64, 64))
    model(np.zeros((1, 64, 64, 3), np.float32))
    callback = CocoEvalCallback(batches, coco, every_n_epochs=3, results_dir=str(tmp_path / "eval"), verbose=False)
    callback.set_model(model)
    callback.set_params({"epochs": 7})
    logged = {}
    for epoch in range(7):
        logs = {"loss": 1.0}
        callback.on_epoch_end(epoch, logs)
        logged[epoch + 1] = "val_AP" in logs
    # epochs 3 and 6 (every 3), and 7 (the last); never 1, 2, 4, 5
    assert [e for e, has in logged.items() if has] == [3, 6, 7]
    assert [h["epoch"] for h in callback.history] == [3, 6, 7]
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert [m["epoch"] for m in metrics] == [3, 6, 7]
    assert sorted(p.name for p in (tmp_path / "eval").glob("results_epoch*.json")) == [
        "results_epoch003.json",
        "results_epoch006.json",
        "results_epoch007.json",
    ]
    # every_n_epochs=1 (the default) evaluates every epoch
    every = CocoEvalCallback(batches, coco, verbose=False)
    every.set_model(model)
    every.set_params({"epochs": 2})
    for epoch in range(2):
        every.on_epoch_end(epoch, {})
    assert [h["epoch"] for h in every.history] == [1, 2]
