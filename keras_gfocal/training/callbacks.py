"""Keras callbacks for detector training."""

import csv
import json
import os

import keras
import numpy as np

from keras_gfocal.evaluation import coco_evaluate, predict_coco


class CocoEvalCallback(keras.callbacks.Callback):
    """COCO mAP (pycocotools) on a validation set at the end of some epochs.

    Adds ``val_AP``, ``val_AP50``, ... to the epoch logs, so CSVLogger,
    TensorBoard and ModelCheckpoint(monitor="val_AP") see them, and prints the
    standard table with the AP per class.

    Args:
        eval_dataset: batches ``(images, targets, meta)`` from
            ``make_dataset(..., training=False)``.
        coco_dataset: the ``CocoDataset`` it was built from (ground truth, ids).
        every_n_epochs: evaluate every n epochs, and always after the last.
        results_dir: if set, each evaluation's COCO results JSON and metrics go here.
    """

    def __init__(self, eval_dataset, coco_dataset, every_n_epochs=1, results_dir=None, verbose=True):
        super().__init__()
        self.eval_dataset = eval_dataset
        self.coco_dataset = coco_dataset
        self.every_n_epochs = every_n_epochs
        self.results_dir = results_dir
        self.verbose = verbose
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        last = self.params and epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        results = predict_coco(self.model, self.eval_dataset, self.coco_dataset.label_to_category_id)
        if self.verbose:
            print(f"\nCOCO evaluation after epoch {epoch + 1}:")
        stats = coco_evaluate(self.coco_dataset.coco, results, verbose=self.verbose)
        self.history.append({"epoch": epoch + 1, **stats})
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in stats.items() if k != "per_class_AP"})
        if self.results_dir:
            os.makedirs(self.results_dir, exist_ok=True)
            with open(os.path.join(self.results_dir, f"results_epoch{epoch + 1:03d}.json"), "w") as f:
                json.dump(results, f)
            with open(os.path.join(self.results_dir, "metrics.json"), "w") as f:
                json.dump(self.history, f, indent=1)


class EpochCSVLogger(keras.callbacks.Callback):
    """``log.csv`` with one row per epoch and a column for every metric any epoch logged.

    Keras' ``CSVLogger`` fixes its columns at the first epoch, so metrics that
    appear later (COCO mAP with ``--eval-every 4``) never reach the file. This
    logger rewrites the (small) file after every epoch with the union of the
    columns seen so far, leaving a cell empty where an epoch did not log that
    metric. Rows already in the file are kept (a resumed run continues it); an
    epoch that runs again replaces its old row.

    Args:
        filename: the CSV file.
    """

    def __init__(self, filename):
        super().__init__()
        self.filename = filename

    def _read(self):
        if not os.path.exists(self.filename):
            return [], []
        with open(self.filename, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def on_epoch_end(self, epoch, logs=None):
        columns, rows = self._read()
        row = {"epoch": str(epoch)}
        for key, value in (logs or {}).items():
            value = np.asarray(value)
            row[key] = repr(float(value)) if value.ndim == 0 else " ".join(map(str, value.ravel().tolist()))
        rows = [r for r in rows if r.get("epoch") != row["epoch"]] + [row]
        rows.sort(key=lambda r: int(r["epoch"]))
        columns = ["epoch"] + sorted({k for r in rows for k in r if k and k != "epoch"} | set(columns[1:]))
        tmp = self.filename + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.filename)
