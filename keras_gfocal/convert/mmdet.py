"""MMDetection-layout GFocal checkpoints (the official GFocalV2 models and
MMDetection's GFL models) mapped onto a ``GFocalDetector``'s variables.

Key names and layouts are listed in the reference facts: ``backbone.*`` in
torchvision's ResNet names (MMDetection's ResNeXt keeps them), ``neck.lateral_convs.{0,1,2}.conv`` and
``neck.fpn_convs.{0..4}.conv`` (P3-P5 outputs, then P6, P7),
``bbox_head.{cls,reg}_convs.{0..3}.{conv,gn}``, ``bbox_head.gfl_cls``,
``bbox_head.gfl_reg``, ``bbox_head.scales.{0..4}.scale`` and, for GFocalV2,
``bbox_head.reg_conf.{0,2}``. The official GFocalV2 models' ``gfl_cls`` has a
background channel after the real classes; it is dropped. The backbone's rows
come from its converter in ``keras_gfocal.pretrained``.
"""

import numpy as np

from keras_gfocal.checkpoints.mapping import (
    CheckpointMismatchError,
    assign_all,
    conv_kernel,
    conv_rows,
    dense_kernel_from_1x1,
)
from keras_gfocal.detector import GFocalDetector
from keras_gfocal.layers.dgqp import DGQP
from keras_gfocal.layers.fpn import FPN
from keras_gfocal.layers.gfl_head import GFLHead
from keras_gfocal.pretrained import backbone_rows


def _group_norm_rows(prefix, layer):
    return [(f"{prefix}.weight", layer.gamma, None), (f"{prefix}.bias", layer.beta, None)]


def _cls_rows(prefix, conv, drop_background):
    """``gfl_cls`` rows; with ``drop_background`` the checkpoint's last channel is left out."""
    if not drop_background:
        return conv_rows(prefix, conv)
    return [
        (f"{prefix}.weight", conv.kernel, lambda w: conv_kernel(w)[..., :-1]),
        (f"{prefix}.bias", conv.bias, lambda b: b[:-1]),
    ]


def fpn_rows(fpn):
    """Rows of an ``FPN``: ``neck.lateral_convs.{0,1,2}``, then ``neck.fpn_convs.{0..4}``
    (the P3-P5 smoothing convs, then P6 and P7)."""
    rows = []
    for i, conv in enumerate(fpn.laterals):
        rows += conv_rows(f"neck.lateral_convs.{i}.conv", conv)
    for i, conv in enumerate(list(fpn.smooth) + [fpn.p6, fpn.p7]):
        rows += conv_rows(f"neck.fpn_convs.{i}.conv", conv)
    return rows


def dgqp_rows(quality):
    """Rows of a ``DGQP``: the official models' ``bbox_head.reg_conf.{0,2}`` 1x1 convs as its Dense layers."""
    rows = []
    for index, dense in ((0, quality.hidden), (2, quality.out)):
        rows += [
            (f"bbox_head.reg_conf.{index}.weight", dense.kernel, dense_kernel_from_1x1),
            (f"bbox_head.reg_conf.{index}.bias", dense.bias, None),
        ]
    return rows


def head_rows(head, drop_background=False):
    """Rows of a ``GFLHead``: its towers (conv, GroupNorm, ReLU per step), outputs, scales and quality branch."""
    rows = []
    for tower_name, tower in (("cls_convs", head.cls_tower), ("reg_convs", head.reg_tower)):
        for i in range(head.stacked_convs):
            conv, norm = tower[3 * i], tower[3 * i + 1]
            rows += conv_rows(f"bbox_head.{tower_name}.{i}.conv", conv)
            rows += _group_norm_rows(f"bbox_head.{tower_name}.{i}.gn", norm)
    rows += _cls_rows("bbox_head.gfl_cls", head.cls_out, drop_background)
    rows += conv_rows("bbox_head.gfl_reg", head.reg_out)
    rows += [(f"bbox_head.scales.{i}.scale", scale.scale, None) for i, scale in enumerate(head.scales)]
    if isinstance(head.quality, DGQP):
        rows += dgqp_rows(head.quality)
    return rows


def gfocal_rows(model, drop_background=False):
    """``(checkpoint key, variable, transform)`` rows of a built ``GFocalDetector``, in MMDetection's names.

    Raises:
        TypeError: ``model`` is not a ``GFocalDetector`` with an ``FPN`` and a ``GFLHead``.
        ValueError: its backbone has no converter in ``keras_gfocal.pretrained``.
    """
    parts = ((model, GFocalDetector), (getattr(model, "fpn", None), FPN), (getattr(model, "head", None), GFLHead))
    for part, expected in parts:
        if not isinstance(part, expected):
            raise TypeError(f"The MMDetection GFocal map reads a {expected.__name__}, got {type(part).__name__}.")
    try:
        rows = backbone_rows(model.backbone, "backbone.")
    except ValueError as error:
        raise ValueError(f"Cannot map an MMDetection GFocal checkpoint onto this model's backbone: {error}") from error
    return rows + fpn_rows(model.fpn) + head_rows(model.head, drop_background)


def needs_no_variable(key):
    # BatchNorm's step counter, and the head's fixed [0, 1, ..., reg_max] projection buffer.
    return key.endswith("num_batches_tracked") or key == "bbox_head.integral.project"


#: The most classes a converted head may have (COCO has 80, LVIS 1203): a class count read off
#: a file is data, and a huge one would make TensorFlow allocate without bound.
MAX_CLASSES = 10_000


def classes_in_checkpoint(state_dict, source, dgqp, num_classes):
    """``(num_classes, drop_background)`` read off ``gfl_cls``, validated as data.

    Args:
        state_dict: ``{key: np.ndarray}`` in MMDetection's names.
        source: the checkpoint's name, for messages.
        dgqp: whether the preset is GFocalV2 (its official models carry a background channel).
        num_classes: the class count asked for, or None to read it off the checkpoint.
    Returns:
        ``(num_classes, drop_background)``: an int in ``1..MAX_CLASSES`` and whether
        ``gfl_cls`` has one channel more (the background channel, dropped on loading).
    Raises:
        CheckpointMismatchError: ``gfl_cls`` missing, of the wrong rank or dtype, weight and
            bias disagreeing, a class count outside ``1..MAX_CLASSES``, or one that does not
            fit ``num_classes``.
    """
    key = "bbox_head.gfl_cls.bias"
    if key not in state_dict:
        raise CheckpointMismatchError(f"{source} has no {key}: it is not an MMDetection GFocal checkpoint.")
    bias = state_dict[key]
    if not isinstance(bias, np.ndarray) or bias.ndim != 1 or bias.dtype.kind != "f":
        raise CheckpointMismatchError(
            f"{source}: {key} should be a 1-D float tensor, is {getattr(bias, 'shape', type(bias).__name__)}"
            f"{' ' + str(bias.dtype) if isinstance(bias, np.ndarray) else ''}."
        )
    channels = int(bias.shape[0])
    weight = state_dict.get("bbox_head.gfl_cls.weight")
    if isinstance(weight, np.ndarray) and (weight.ndim != 4 or weight.shape[0] != channels):
        raise CheckpointMismatchError(
            f"{source}: bbox_head.gfl_cls.weight {tuple(weight.shape)} does not fit {key} ({channels},)."
        )
    asked = num_classes is not None
    if not asked:
        # The official GFocalV2 models carry a background channel; MMDetection's GFLV1 models do not.
        num_classes = channels - 1 if dgqp else channels
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise CheckpointMismatchError(f"num_classes must be an int, got {type(num_classes).__name__}.")
    num_classes = int(num_classes)
    if not 1 <= num_classes <= MAX_CLASSES:
        what = f"num_classes={num_classes}" if asked else f"{key} has {channels} channels, i.e. {num_classes} classes"
        raise CheckpointMismatchError(f"{source}: {what}; a head has 1 to {MAX_CLASSES:,} classes.")
    if channels == num_classes + 1:
        return num_classes, True
    if channels == num_classes:
        return num_classes, False
    raise CheckpointMismatchError(
        f"{source}: {key} has {channels} classes, which does not fit num_classes={num_classes}."
    )


def load_gfocal_weights(model, state_dict, source, drop_background=False):
    """Assigns an MMDetection-layout GFocal state dict to a built ``GFocalDetector``,
    all or nothing (see ``keras_gfocal.checkpoints.mapping.assign_all``); a deformable-conv
    (DCN) checkpoint fits a preset with the same ``dcn_stages`` only, its offset convs'
    keys named as unused or missing otherwise."""
    assign_all(state_dict, gfocal_rows(model, drop_background), source, ignore=needs_no_variable)
