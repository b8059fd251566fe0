"""Sharded TFRecord storage of per-image detection records.

``write_tfrecords`` serialises a ``CocoDataset`` (encoded image bytes as stored on disk,
training boxes and labels, image id and size) into ``num_shards`` files;
``read_tfrecords`` reads them back as the same per-image records that
``CocoDataset.records`` yields (with ``"image_bytes"`` instead of ``"image_path"``), so
``make_dataset`` accepts either source.

Every image of the ``CocoDataset`` is written, including images without boxes, so one
set of files serves training (``make_dataset`` skips empty images) and evaluation.

Example features (``tf.train.Example``):

| key | type | content |
| --- | --- | --- |
| ``image/encoded`` | bytes | the image file's bytes |
| ``image/filename`` | bytes | the annotation's ``file_name`` |
| ``image/id`` | int64 | COCO image id |
| ``image/height``, ``image/width`` | int64 | original size |
| ``image/object/bbox`` | float list | xyxy pixel boxes, flattened ``[4N]`` |
| ``image/object/label`` | int64 list | contiguous labels ``[N]`` |
| ``image/object/category_id`` | int64 list | COCO category ids ``[N]`` |
"""

import os

import tensorflow as tf

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/object/bbox": tf.io.VarLenFeature(tf.float32),
    "image/object/label": tf.io.VarLenFeature(tf.int64),
    "image/object/category_id": tf.io.VarLenFeature(tf.int64),
}


def shard_path(out_prefix, index, num_shards):
    """Path of shard ``index`` of ``num_shards``: ``{prefix}-00003-of-00008.tfrecord``."""
    return f"{out_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_example(entry, image_bytes, category_ids):
    """Serialises one image entry (as returned by ``CocoDataset.get``).

    Args:
        entry: dict with ``"id"``, ``"file_name"``, ``"height"``, ``"width"``, ``"boxes"``
            float32 ``[N, 4]``, ``"labels"`` int32 ``[N]``.
        image_bytes: the encoded image.
        category_ids: COCO category id of each label (``label_to_category_id``).

    Returns:
        Serialised ``tf.train.Example`` bytes.
    """
    labels = [int(v) for v in entry["labels"]]
    feature = {
        "image/encoded": _bytes([image_bytes]),
        "image/filename": _bytes([entry["file_name"].encode("utf-8")]),
        "image/id": _ints([entry["id"]]),
        "image/height": _ints([entry["height"]]),
        "image/width": _ints([entry["width"]]),
        "image/object/bbox": _floats(entry["boxes"].reshape(-1)),
        "image/object/label": _ints(labels),
        "image/object/category_id": _ints([category_ids[v] for v in labels]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def write_tfrecords(dataset, out_prefix, num_shards=8):
    """Writes every image of a ``CocoDataset`` into sharded TFRecord files.

    Images are dealt round-robin over the shards in ``dataset.image_ids`` order.

    Args:
        dataset: a ``keras_gfocal.data.coco.CocoDataset``.
        out_prefix: path prefix (any ``tf.io.gfile`` path); its folder is created.
        num_shards: number of files (>= 1).

    Returns:
        List of the ``num_shards`` written paths.
    """
    num_shards = int(num_shards)
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    folder = os.path.dirname(str(out_prefix))
    if folder:
        tf.io.gfile.makedirs(folder)
    paths = [shard_path(out_prefix, i, num_shards) for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for index, image_id in enumerate(dataset.image_ids):
            entry = dataset.get(image_id)
            with tf.io.gfile.GFile(entry["path"], "rb") as f:
                image_bytes = f.read()
            record = encode_example(entry, image_bytes, dataset.label_to_category_id)
            writers[index % num_shards].write(record)
    finally:
        for writer in writers:
            writer.close()
    return paths


def parse_example(serialized):
    """Parses one serialised example into a per-image record.

    Args:
        serialized: string scalar tensor.

    Returns:
        dict with ``"image_bytes"`` string scalar, ``"boxes"`` float32 ``[N, 4]``,
        ``"labels"`` int32 ``[N]``, ``"image_id"`` int64 scalar, ``"original_size"`` int32
        ``[2]`` (h, w), ``"file_name"`` string scalar, ``"category_ids"`` int64 ``[N]``.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    boxes = tf.sparse.to_dense(parsed["image/object/bbox"])
    return {
        "image_bytes": parsed["image/encoded"],
        "boxes": tf.reshape(boxes, [-1, 4]),
        "labels": tf.cast(tf.sparse.to_dense(parsed["image/object/label"]), tf.int32),
        "image_id": parsed["image/id"],
        "original_size": tf.cast(tf.stack([parsed["image/height"], parsed["image/width"]]), tf.int32),
        "file_name": parsed["image/filename"],
        "category_ids": tf.sparse.to_dense(parsed["image/object/category_id"]),
    }


def read_tfrecords(file_pattern, *, shuffle_files=False, seed=None, cycle_length=None):
    """Reads TFRecords written by ``write_tfrecords`` as per-image records.

    Args:
        file_pattern: a glob pattern (e.g. ``"/data/train-*.tfrecord"``), a single
            path, or a list of either.
        shuffle_files: shuffle the order of the shards every epoch.
        seed: seed for ``shuffle_files``.
        cycle_length: shards read concurrently (interleaved); default: all of them
            up to 16. With ``cycle_length=1`` and no shuffling, records come in shard
            order.

    Returns:
        ``tf.data.Dataset`` of the dicts described in ``parse_example``, ready for
        ``keras_gfocal.data.pipeline.make_dataset``.
    """
    if isinstance(file_pattern, (str, os.PathLike)):
        patterns = [file_pattern]
    else:
        patterns = list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(str(p))})
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {file_pattern!r}.")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = cycle_length or min(16, len(files))
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE if cycle > 1 else None,
    )
    return ds.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
