"""An MMDetection-layout GFocal checkpoint file converted into a ``GFocalDetector``.

``convert_checkpoint`` reads the ``.pth`` file without torch
(``keras_gfocal.checkpoints``), builds the matching preset, names its classes
and loads the weights along ``keras_gfocal.convert.mmdet``'s map; ``gfocal
convert`` is its command.
"""

import os

from keras_gfocal.checkpoints import CheckpointError, read_state_dict
from keras_gfocal.convert.coco80 import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from keras_gfocal.convert.mmdet import MAX_CLASSES, classes_in_checkpoint, load_gfocal_weights
from keras_gfocal.detector import GFocalDetector
from keras_gfocal.presets import preset_config


def _meta_class_names(meta, source):
    """The checkpoint's ``meta["CLASSES"]`` as a list of ``str``, or None if it has none.

    Args:
        meta: the checkpoint's ``meta`` dict (or anything else read from the file).
        source: the checkpoint's name, for messages.
    Raises:
        CheckpointError: ``meta`` or ``meta["CLASSES"]`` is not what MMDetection writes (a dict;
            a list or tuple of at most ``MAX_CLASSES`` strings).
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: its meta is a {type(meta).__name__}, not a dict.")
    names = meta.get("CLASSES")
    if names is None:
        return None
    if (
        not isinstance(names, (list, tuple))
        or len(names) > MAX_CLASSES
        or not all(isinstance(n, str) and len(n) <= 1000 for n in names)
    ):
        raise CheckpointError(
            f"{source}: meta['CLASSES'] should be a list of at most {MAX_CLASSES:,} class names, "
            f"is a {type(names).__name__}" + (f" of {len(names)}" if isinstance(names, (list, tuple)) else "") + "."
        )
    return list(names)


def convert_checkpoint(checkpoint, preset, out=None, num_classes=None, class_names=None, category_ids=None):
    """Builds preset ``preset`` with the weights of an MMDetection-layout GFocal checkpoint.

    Args:
        checkpoint: a ``.pth`` path (read without torch or code execution) or
            a ``{key: array}`` state dict.
        preset: a ``keras_gfocal.presets`` name with a ResNet, ResNeXt or Res2Net backbone,
            e.g. ``"gfocal_v2_r50_fpn"`` for the official GFocalV2 R50 models,
            ``"gfocal_v2_r101_dcn_fpn"`` for its R101-DCN model,
            ``"gfocal_v2_r2n101_dcn_fpn"`` for its R2-101-DCN model,
            ``"gfocal_v1_x101_32x4d_fpn"`` for MMDetection's GFL X101-32x4d.
        out: optional ``.keras`` path to save the model to.
        num_classes: default: read off the checkpoint (``gfl_cls`` channels,
            less the background channel of the official GFocalV2 models).
        class_names, category_ids: dataset metadata; default: the 80 COCO
            classes and their ids when there are 80 classes, else the
            checkpoint's ``meta["CLASSES"]`` (ids 1..N) if it has them.
    Returns:
        the ``GFocalDetector``, built for any input size; ``image_size`` None so
        evaluation and prediction use the reference's per-image test resize.
    Raises:
        CheckpointError (a ValueError): the file cannot be read (see
            ``keras_gfocal.checkpoints.read_state_dict``), or its ``meta`` is
            malformed.
        CheckpointMismatchError (a CheckpointError): missing or extra keys,
            different shapes or ranks, a class count outside 1..10,000 or not
            that of the head, the first few named (a deformable-conv
            model into a preset without DCN: its ``conv_offset`` keys).
    """
    if isinstance(checkpoint, dict):
        state_dict, meta, source = checkpoint, {}, "the given state dict"
    else:
        source = os.fspath(checkpoint)
        state_dict, meta = read_state_dict(source)
        meta = meta or {}
    dgqp = preset_config(preset).get("dgqp", True)
    num_classes, drop_background = classes_in_checkpoint(state_dict, source, dgqp, num_classes)
    if class_names is None:
        if num_classes == len(COCO_CLASS_NAMES):
            class_names, category_ids = COCO_CLASS_NAMES, category_ids or COCO_CATEGORY_IDS
        else:
            names = _meta_class_names(meta, source)
            if names is not None and len(names) == num_classes:
                class_names = names
    if class_names is not None and category_ids is None:
        category_ids = range(1, num_classes + 1)

    model = GFocalDetector.from_preset(
        preset,
        num_classes=num_classes,
        backbone_weights=None,
        class_names=class_names,
        category_ids=category_ids,
    )
    model.build((None, None, None, 3))
    load_gfocal_weights(model, state_dict, source, drop_background)
    if out is not None:
        model.save(out)
    return model
