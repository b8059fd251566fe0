"""TFRecord round trip: same records and same batches as the COCO folder."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal.data import make_dataset, read_tfrecords, write_tfrecords


def test_round_trip_records(coco, tmp_path, h):
    paths = write_tfrecords(coco, str(tmp_path / "rec" / "train"), num_shards=2)
    assert [os.path.basename(p) for p in paths] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    records = list(read_tfrecords(str(tmp_path / "rec" / "train-*.tfrecord")))
    # Round-robin sharding + interleaved reading keeps the original order.
    assert [int(r["image_id"]) for r in records] == [1, 2, 3, 5, 9]
    for rec in records:
        image_id = int(rec["image_id"])
        entry = coco.get(image_id)
        with open(entry["path"], "rb") as f:
            assert rec["image_bytes"].numpy() == f.read()
        assert rec["boxes"].dtype == tf.float32 and rec["labels"].dtype == tf.int32
        np.testing.assert_array_equal(
            rec["boxes"].numpy(), np.asarray(h.EXPECTED_BOXES[image_id], np.float32).reshape(-1, 4)
        )
        np.testing.assert_array_equal(rec["labels"].numpy(), h.EXPECTED_LABELS[image_id])
        np.testing.assert_array_equal(rec["original_size"].numpy(), h.SIZES[image_id])
        assert rec["file_name"].numpy().decode() == entry["file_name"]
        np.testing.assert_array_equal(
            rec["category_ids"].numpy(),
            [coco.label_to_category_id[label] for label in h.EXPECTED_LABELS[image_id]],
        )


def _numpy(ds):
    return [tf.nest.map_structure(np.asarray, b) for b in ds]


def test_make_dataset_same_batches_from_tfrecords(coco, tmp_path):
    write_tfrecords(coco, str(tmp_path / "val"), num_shards=3)
    records = read_tfrecords(str(tmp_path / "val-*"))
    kwargs = dict(batch_size=2, image_size=(80, 90), max_boxes=4, deterministic=True)
    for training in (False, True):
        extra = dict(shuffle=False, flip_prob=1.0) if training else {}
        from_files = _numpy(make_dataset(coco, training=training, **kwargs, **extra))
        from_records = _numpy(make_dataset(records, training=training, **kwargs, **extra))
        assert len(from_files) == len(from_records) == (2 if training else 3)
        for a, b in zip(from_files, from_records):
            tf.nest.assert_same_structure(a, b)
            for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
                np.testing.assert_array_equal(x, y)


def test_read_tfrecords_no_match(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-"):
        read_tfrecords(str(tmp_path / "nothing-*.tfrecord"))
