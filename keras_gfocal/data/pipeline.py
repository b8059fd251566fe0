"""The batched ``tf.data`` input pipeline: per-image records -> fixed-shape model batches.

``make_dataset`` turns a ``keras_gfocal.data.CocoDataset``, or the per-image records
read back by ``keras_gfocal.data.tfrecord.read_tfrecords``, into the batches the
detector trains and is evaluated on: decode, resize (a fixed canvas, a random
multi-scale canvas, or the reference's per-image test resize), flip, normalise, pad.

Per-image records (the common currency of both sources) are dicts:

* ``"image_path"`` string scalar (from ``CocoDataset.records``) or ``"image_bytes"``
  string scalar (encoded JPEG/PNG, from TFRecords, with its ``"file_name"``),
* ``"boxes"``: float32 ``[N, 4]`` xyxy boxes in original image pixels,
* ``"labels"``: int32 ``[N]`` contiguous labels in ``[0, num_classes)``,
* ``"image_id"``: int64 scalar, the COCO image id,
* ``"original_size"``: int32 ``[2]``, ``(height, width)`` from the annotation file.

An image that fails to decode (truncated or corrupt; ``CocoDataset``'s default
check reads only headers) stops the pipeline with an ``InvalidArgumentError``
that names its file; no row is dropped. (A missing file stops it in
``tf.io.read_file``, whose ``NotFoundError`` names the path.)
"""

import tensorflow as tf

from keras_gfocal.data import transforms
from keras_gfocal.data.coco import CocoDataset
from keras_gfocal.image import decode_image, normalize_image

#: What the pipeline's decoding error says after the image's name.
UNDECODABLE = (
    ": not a complete JPEG, PNG, GIF or BMP file (truncated or corrupt). "
    'CocoDataset(..., verify_images="decode") (gfocal: --verify-images decode) finds every such file '
    "before the run, and with skip_bad_images=True leaves them out."
)


def image_name(record):
    """A string scalar naming a record's image: its path, else its file name (if any) and image id."""
    if "image_path" in record:
        return record["image_path"]
    image_id = tf.strings.join(["image_id ", tf.strings.as_string(record["image_id"])])
    if "file_name" in record:
        return tf.strings.join([record["file_name"], " (", image_id, ")"])
    return image_id


def decode_naming_failures(image_bytes, name):
    """``decode_image``, with an error that names the image when the bytes do not decode.

    A decoding op's own error says only ``jpeg::Uncompress failed``, and a graph
    cannot catch it; a one-element ``tf.data`` pipeline can. The decode runs in
    one, whose error is caught (``ignore_errors``) and replaced by a marker,
    and an assertion then raises an error carrying ``name``. The image is never
    left out: it decodes or the pipeline stops.

    Args:
        image_bytes: string scalar, an encoded image.
        name: string scalar put in the error message (e.g. the file's path).

    Returns:
        uint8 ``[h, w, 3]`` RGB, as ``keras_gfocal.image.decode_image`` returns it.

    Raises:
        tf.errors.InvalidArgumentError: when iterated, if the bytes do not decode;
            the message holds ``"Cannot decode image <name>: ..."``.
    """
    decoded = tf.data.Dataset.from_tensors(image_bytes).map(lambda data: (decode_image(data), True)).ignore_errors()
    failed = tf.data.Dataset.from_tensors((tf.zeros([0, 0, 3], tf.uint8), False))
    image, ok = decoded.concatenate(failed).take(1).get_single_element()
    check = tf.debugging.Assert(ok, [tf.strings.join(["Cannot decode image ", name, UNDECODABLE])])
    with tf.control_dependencies([check]):
        return tf.identity(image)


def make_dataset(
    dataset,
    *,
    training,
    batch_size,
    image_size=transforms.REFERENCE_IMAGE_SIZE,
    max_boxes=100,
    multiscale=None,
    flip_prob=None,
    shuffle=None,
    seed=None,
    deterministic=False,
    pad_to_multiple=32,
    drop_remainder=None,
    shuffle_buffer=None,
    test_scale=None,
):
    """Builds the batched input pipeline for training or evaluation.

    Per image: decode (``decode_naming_failures``: RGB, or an error naming the
    image) -> keep-ratio resize to fit ``image_size`` (or a random multi-scale
    canvas) -> random horizontal flip (training) -> normalise with
    ``keras_gfocal.image.MEAN`` / ``STD`` -> zero-pad bottom/right to
    ``padded_size(image_size, pad_to_multiple)``; boxes are resized / flipped
    alongside, then truncated / padded to ``max_boxes`` rows.

    With ``test_scale`` (evaluation only), the reference's test-time resize
    replaces the fixed canvas: each image keeps its ratio with the short side
    at most ``test_scale[0]`` and the long side at most ``test_scale[1]`` and is
    padded to its own size rounded up to ``pad_to_multiple``; a batch holds
    images of one padded size only (``batch_size=1``: one image per batch, in
    dataset order; larger batches group images of equal padded size, which
    changes the order -- ``meta["image_id"]`` names each image).

    Args:
        dataset: a ``CocoDataset``, or a ``tf.data.Dataset`` of per-image records such
            as returned by ``keras_gfocal.data.tfrecord.read_tfrecords``.
        training: training pipeline (augmentation, shuffling, images without boxes
            left out, remainder dropped) or evaluation pipeline (all images, in
            order, with metadata).
        batch_size: images per batch.
        image_size: ``(H, W)`` canvas that resized images fit into; the default,
            ``transforms.REFERENCE_IMAGE_SIZE`` ``(800, 1333)``, is the reference's
            1333x800 keep-ratio resize.
        max_boxes: rows of the padded target tensors; extra boxes are dropped
            (the first ``max_boxes`` are kept).
        multiscale: ``None``, or ``(min_short, max_short)``: in training, the shorter
            side of the canvas is drawn per image uniformly from this integer range
            (the long side stays at ``max(image_size)``); needs
            ``max_short <= min(image_size)``. Ignored when ``training=False``.
        flip_prob: horizontal flip probability; default 0.5 in training, else 0.
        shuffle: shuffle images; default ``training``.
        seed: seed for shuffling and augmentation; with ``deterministic=True`` and
            ``seed=None``, 0 is used.
        deterministic: make training's order and augmentation reproducible
            (sets ``tf.data.Options.deterministic``, seeds the random ops).
            Evaluation pipelines (``training=False``) always keep the dataset's
            order, whatever this says: rows follow the records (unless
            ``shuffle=True``; ``test_scale`` batches group as described above),
            so they pair with a list of images; the flag then only seeds the
            random ops.
        pad_to_multiple: the padded canvas is ``image_size`` rounded up to this.
        drop_remainder: drop the last partial batch; default ``training``.
        shuffle_buffer: shuffle buffer size; default: all images of a
            ``CocoDataset`` (its records are small), 1024 for record datasets.
        test_scale: None, or ``(short, long)`` limits of the reference's
            per-image test resize, e.g. ``transforms.REFERENCE_TEST_SCALE``
            ``(800, 1333)``; evaluation only, ``image_size`` is then ignored.

    Returns:
        A ``tf.data.Dataset``. In training, elements are
        ``(images, {"boxes": boxes, "labels": labels, "image_size": image_size})``
        with images float32 ``[B, Hp, Wp, 3]``, boxes float32 ``[B, max_boxes, 4]``
        xyxy pixels in the resized image (zeros for padding rows), labels int32
        ``[B, max_boxes]`` (-1 for padding rows) and image_size int32 ``[B, 2]``,
        each image's resized ``(height, width)`` before padding (the loss leaves
        the points over the padding out). In evaluation, elements are
        ``(images, targets, meta)`` with meta ``{"image_id": int64 [B],
        "scale": float32 [B] (resized / original), "original_size": int32 [B, 2]
        (h, w)}``; boxes in original pixels are ``boxes / scale``.

    Raises:
        ValueError, TypeError: bad arguments, at once.
        tf.errors.InvalidArgumentError: while iterating, at an image that does
            not decode; the message names it (``"Cannot decode image <path>: ..."``;
            for TFRecords its file name and image id).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if max_boxes < 1:
        raise ValueError(f"max_boxes must be >= 1, got {max_boxes}.")
    image_size = tuple(int(v) for v in image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be (H, W) positive ints, got {image_size}.")
    pad_size = transforms.padded_size(image_size, pad_to_multiple)
    if test_scale is not None:
        if training:
            raise ValueError(
                "test_scale is the reference's test-time resize, for evaluation pipelines "
                "(training=False); training batches share one canvas, image_size."
            )
        test_scale = tuple(int(v) for v in test_scale)
        if len(test_scale) != 2 or not 1 <= test_scale[0] <= test_scale[1]:
            raise ValueError(f"test_scale must be (short, long) with 1 <= short <= long, got {test_scale}.")
    flip_prob = (0.5 if training else 0.0) if flip_prob is None else float(flip_prob)
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}.")
    shuffle = training if shuffle is None else bool(shuffle)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    if deterministic and seed is None:
        seed = 0
    if multiscale is not None:
        lo, hi = (int(v) for v in multiscale)
        if not 1 <= lo <= hi <= min(image_size):
            raise ValueError(
                f"multiscale {tuple(multiscale)} must satisfy 1 <= min_short <= max_short "
                f"<= min(image_size) = {min(image_size)}; enlarge image_size to fit the "
                "largest scale (e.g. image_size=(960, 1333) for multiscale=(480, 960))."
            )
        multiscale = (lo, hi) if training else None

    if isinstance(dataset, CocoDataset):
        records = dataset.records(skip_empty=training)
        num_images = len(dataset.image_ids_with_boxes if training else dataset.image_ids)
        default_buffer = max(1, num_images)
    elif isinstance(dataset, tf.data.Dataset):
        records = dataset
        if training:
            records = records.filter(lambda r: tf.shape(r["labels"])[0] > 0)
        default_buffer = 1024
    else:
        raise TypeError(
            f"make_dataset expects a CocoDataset or a tf.data.Dataset of records, got {type(dataset).__name__}."
        )
    if shuffle:
        records = records.shuffle(shuffle_buffer or default_buffer, seed=seed, reshuffle_each_iteration=True)
    # One stateless seed [2] per image; a new sequence every epoch, reproducible
    # from `seed` (element-bound, so parallel map order does not matter).
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    elements = tf.data.Dataset.zip(records, seeds)

    def process(record, rng_seed):
        if "image_bytes" in record:
            image_bytes = record["image_bytes"]
        else:
            image_bytes = tf.io.read_file(record["image_path"])
        image = decode_naming_failures(image_bytes, image_name(record))
        boxes = tf.reshape(tf.cast(record["boxes"], tf.float32), [-1, 4])
        labels = tf.cast(record["labels"], tf.int32)
        original_size = tf.shape(image)[:2]
        scale_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(rng_seed, 2))
        if test_scale is not None:
            target = transforms.oriented_canvas(tf.shape(image)[:2], test_scale)
        elif multiscale is not None:
            target = transforms.random_short_side_target(image_size, multiscale, scale_seed)
        else:
            target = tf.constant(image_size, tf.int32)
        image, boxes, scale = transforms.resize_keep_ratio(image, boxes, target)
        resized_size = tf.shape(image)[:2]
        image, boxes, _ = transforms.random_horizontal_flip(image, boxes, flip_prob, flip_seed)
        if test_scale is not None:
            image = transforms.pad_up_to_multiple(normalize_image(image), pad_to_multiple)
        else:
            image = transforms.pad_to_size(normalize_image(image), pad_size)
        boxes, labels = transforms.pad_boxes(boxes, labels, max_boxes)
        targets = {"boxes": boxes, "labels": labels, "image_size": tf.ensure_shape(resized_size, [2])}
        if training:
            return image, targets
        meta = {
            "image_id": tf.cast(record["image_id"], tf.int64),
            "scale": tf.cast(scale, tf.float32),
            "original_size": tf.cast(original_size, tf.int32),
        }
        return image, targets, meta

    ds = elements.map(process, num_parallel_calls=tf.data.AUTOTUNE)
    if test_scale is not None and batch_size > 1:
        # Batches of one padded size: never a larger canvas than an image's own.
        def size_key(image, targets, meta):
            shape = tf.cast(tf.shape(image), tf.int64)
            return shape[0] * 100003 + shape[1]

        ds = ds.group_by_window(
            key_func=size_key,
            reduce_func=lambda _, window: window.batch(batch_size, drop_remainder=drop_remainder),
            window_size=batch_size,
        )
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Parallel map may otherwise hand out rows in the order they finish.
    options.deterministic = bool(deterministic) or not training
    return ds.with_options(options)
