"""Bad targets are refused by fit() with a message that names them; log.csv keeps every metric."""

import csv

import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal.detection_loss import graph_checks, validate_targets
from keras_gfocal.training.callbacks import EpochCSVLogger


def _targets(box):
    boxes = np.zeros([2, 3, 4], np.float32)
    labels = np.full([2, 3], -1, np.int32)
    boxes[0, 0], labels[0, 0] = [1, 1, 9, 9], 0
    boxes[1, 1], labels[1, 1] = box, 1
    return boxes, labels


@pytest.mark.parametrize("box", [[np.nan, 10, 20, 20], [1, 1, np.inf, 5], [-np.inf, 1, 4, 5]])
def test_fit_refuses_non_finite_boxes(box):
    from keras_gfocal import GFocalDetector

    boxes, labels = _targets(box)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    with pytest.raises(ValueError) as info:
        model.fit(np.zeros([2, 64, 64, 3], np.float32), {"boxes": boxes, "labels": labels}, epochs=1, verbose=0)
    text = str(info.value)
    assert "1 box(es) with a non-finite coordinate (NaN or infinity), the first in image 1, row 1" in text
    assert str(np.asarray(box, np.float32).tolist()) in text


def test_padding_rows_may_hold_anything():
    boxes, labels = _targets([2, 2, 6, 6])
    boxes[0, 2] = np.nan  # label -1: a padding row, never read
    validate_targets(boxes, labels, num_classes=2)


def test_dataset_targets_with_nan_fail_inside_the_graph_naming_the_cause():
    boxes, labels = _targets([np.nan, 10, 20, 20])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"a ground-truth box has a non-finite coordinate"):
        graph_checks(tf.constant(boxes), tf.constant(labels), num_classes=2)
    finite_boxes, finite_labels = _targets([2, 2, 6, 6])
    finite_boxes[0, 2] = np.nan  # a padding row
    graph_checks(tf.constant(finite_boxes), tf.constant(finite_labels), num_classes=2)


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_log_csv_keeps_metrics_that_appear_after_the_first_epoch(tmp_path):
    path = str(tmp_path / "log.csv")
    logger = EpochCSVLogger(path)
    logger.on_epoch_end(0, {"loss": 3.0, "qfl": 1.0})  # --eval-every 2: no evaluation yet
    logger.on_epoch_end(1, {"loss": 2.0, "qfl": 0.5, "val_AP": 0.25, "val_AP50": 0.5})
    logger.on_epoch_end(2, {"loss": 1.5, "qfl": 0.25})
    columns, rows = _rows(path)
    assert columns == ["epoch", "loss", "qfl", "val_AP", "val_AP50"]
    assert [r["val_AP"] for r in rows] == ["", "0.25", ""]
    assert [r["val_AP50"] for r in rows] == ["", "0.5", ""]
    assert [float(r["loss"]) for r in rows] == [3.0, 2.0, 1.5]

    # A resumed run (a new logger on the same file) continues it; an epoch run again replaces its row.
    resumed = EpochCSVLogger(path)
    resumed.on_epoch_end(2, {"loss": 1.25, "qfl": 0.2})
    resumed.on_epoch_end(3, {"loss": 1.0, "qfl": 0.1, "val_AP": 0.5, "val_AP50": 0.75, "val_AR": 0.6})
    columns, rows = _rows(path)
    assert columns == ["epoch", "loss", "qfl", "val_AP", "val_AP50", "val_AR"]
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["loss"] for r in rows] == ["3.0", "2.0", "1.25", "1.0"]
    assert [r["val_AR"] for r in rows] == ["", "", "", "0.6"]
