"""Reference checkpoints converted into ``GFocalDetector`` models.

``convert_checkpoint`` reads an MMDetection-layout GFocal ``.pth`` file without
torch (``keras_gfocal.checkpoints``), builds the matching preset and loads the
weights; ``gfocal convert`` is its command.
"""

import os

from keras_gfocal.checkpoints import read_state_dict
from keras_gfocal.checkpoints.coco80 import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from keras_gfocal.checkpoints.mmdet import classes_in_checkpoint, load_gfocal_weights
from keras_gfocal.detector import GFocalDetector
from keras_gfocal.presets import preset_config


def convert_checkpoint(checkpoint, preset, out=None, num_classes=None, class_names=None, category_ids=None):
    """Builds preset ``preset`` with the weights of an MMDetection-layout GFocal checkpoint.

    Args:
        checkpoint: a ``.pth`` path (read without torch or code execution) or
            a ``{key: array}`` state dict.
        preset: a ``keras_gfocal.presets`` name with a ResNet backbone, e.g.
            ``"gfocal_v2_r50_fpn"`` for the official GFocalV2 R50 models.
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
        CheckpointMismatchError (a ValueError): missing or extra keys or
            different shapes, the first few named; deformable-conv (DCN)
            models are named as such.
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
        elif meta.get("CLASSES") is not None and len(meta["CLASSES"]) == num_classes:
            class_names = meta["CLASSES"]
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
