"""The training loop behind ``gfocal train`` and ``gfocal demo``.

Plain ``model.fit`` under the strategy that fits the machine, with the reference
schedule, per-epoch checkpoints, ``BackupAndRestore`` (a killed run resumes where
it stopped), CSV and TensorBoard logs and COCO evaluation.
"""

import json
import os

import keras
import tensorflow as tf

from keras_gfocal.data import CocoDataset, make_dataset
from keras_gfocal.data.transforms import REFERENCE_IMAGE_SIZE
from keras_gfocal.detector import GFocalDetector
from keras_gfocal.schedules import reference_optimizer, reference_schedule, scaled_lr
from keras_gfocal.training.callbacks import CocoEvalCallback, EpochCSVLogger


def default_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, MirroredStrategy
    with several GPUs, otherwise the default (single-device) strategy."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def default_decay_epochs(epochs):
    """The reference's decay points (8 and 11 of 12 epochs) scaled to ``epochs``."""
    return tuple(sorted({max(1, round(epochs * 8 / 12)), max(1, round(epochs * 11 / 12))}))


def train(
    train_ann,
    train_images,
    val_ann=None,
    val_images=None,
    *,
    preset="gfocal_v2_tiny",
    epochs=12,
    batch_size=16,
    image_size=REFERENCE_IMAGE_SIZE,
    out="runs/gfocal",
    backbone_weights="default",
    learning_rate=None,
    decay_epochs=None,
    warmup_steps=500,
    multiscale=None,
    mixed_precision=None,
    eval_every=1,
    max_boxes=100,
    seed=None,
    skip_bad_images=False,
    verify_images="header",
    strategy=None,
    verbose="auto",
    extra_callbacks=(),
    model_kwargs=None,
):
    """Trains a detector on a COCO-format dataset and returns ``(model, history)``.

    Args:
        train_ann, train_images: COCO instances JSON and image folder.
        val_ann, val_images: optional validation set, evaluated with pycocotools.
        preset: a ``GFocalDetector`` preset name.
        epochs: epochs to train.
        batch_size: global batch size (split across replicas).
        image_size: ``(H, W)`` canvas of the keep-ratio resize.
        out: run folder: ``model.keras``, ``checkpoints/``, ``backup/``,
            ``log.csv``, ``tensorboard/``, ``eval/``.
        learning_rate: default 0.01 scaled linearly from a global batch of 16.
        decay_epochs: epochs where the rate drops x0.1; default scaled from (8, 11)/12.
        warmup_steps: linear warm-up length (500, capped for short runs).
        multiscale: ``(min_short, max_short)`` for multi-scale training.
        mixed_precision: None, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
        eval_every: evaluate every n epochs (and after the last); ``log.csv``
            has every metric of every epoch, empty where an epoch was not evaluated.
        skip_bad_images: leave out images that are missing or cannot be read
            (named in a warning) instead of raising an error that names them.
        verify_images: the image check of ``CocoDataset`` (``"header"`` or
            ``"decode"``, which also finds truncated files; ``gfocal train``
            uses ``"decode"``).
        strategy: a ``tf.distribute`` strategy; default ``default_strategy()``.
        extra_callbacks: more Keras callbacks.
        model_kwargs: overrides of the preset's constructor arguments.
    """
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)
    strategy = strategy or default_strategy()
    os.makedirs(out, exist_ok=True)

    def open_dataset(ann, images, split):
        dataset = CocoDataset(
            ann,
            images,
            skip_bad_images=skip_bad_images,
            verify_images=verify_images,
            bad_images_file=os.path.join(out, f"bad_images_{split}.txt"),
        )
        for line in dataset.summary():
            print(line)
        return dataset

    train_set = open_dataset(train_ann, train_images, "train")
    train_ds = make_dataset(
        train_set,
        training=True,
        batch_size=batch_size,
        image_size=image_size,
        max_boxes=max_boxes,
        multiscale=multiscale,
        seed=seed,
    )
    steps_per_epoch = len(train_set.image_ids_with_boxes) // batch_size
    if not train_set.image_ids_with_boxes:
        raise ValueError(
            f"{train_ann} has no images with a usable box to train on ({len(train_set)} usable images; "
            + "; ".join(line.strip() for line in train_set.summary()[1:])
            + ")."
            if len(train_set.summary()) > 1
            else f"{train_ann} has no images with a usable box to train on ({len(train_set)} usable images)."
        )
    if steps_per_epoch == 0:
        raise ValueError(
            f"{train_ann} has {len(train_set.image_ids_with_boxes)} images with boxes, fewer than one "
            f"batch of {batch_size}: lower --batch-size."
        )

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "checkpoints", "epoch_{epoch:03d}.keras")),
        EpochCSVLogger(os.path.join(out, "log.csv")),
        keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), write_graph=False),
    ]
    if val_ann:
        val_set = open_dataset(val_ann, val_images, "val")
        val_ds = make_dataset(
            val_set, training=False, batch_size=max(1, batch_size), image_size=image_size, max_boxes=max_boxes
        )
        # Before the checkpoint callbacks, so that they see val_AP in the logs.
        callbacks.insert(
            0, CocoEvalCallback(val_ds, val_set, every_n_epochs=eval_every, results_dir=os.path.join(out, "eval"))
        )
    callbacks += list(extra_callbacks)
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)

    with strategy.scope():
        model = GFocalDetector.from_preset(
            preset,
            num_classes=train_set.num_classes,
            backbone_weights=backbone_weights,
            class_names=train_set.class_names,
            category_ids=train_set.category_ids,
            image_size=image_size,
            **(model_kwargs or {}),
        )
        height, width = train_ds.element_spec[0].shape[1:3]
        model.build((None, height, width, 3))
        schedule = reference_schedule(
            steps_per_epoch,
            global_batch_size=batch_size,
            decay_epochs=decay_epochs or default_decay_epochs(epochs),
            warmup_steps=warmup_steps,
            base_lr=learning_rate if learning_rate is not None else scaled_lr(batch_size),
        )
        model.compile(optimizer=reference_optimizer(schedule))
    history = model.fit(train_ds, epochs=epochs, callbacks=callbacks, verbose=verbose)
    model.save(os.path.join(out, "model.keras"))
    return model, history
