"""OpenMMLab's Res2Net weights for ``keras_gfocal.layers.Res2NetBackbone``: MMDetection's key map
and the ImageNet file ``open-mmlab://res2net101_v1d_26w_4s``.

A deformable split conv (``dcn_stages``) is named as mmcv's ``DeformConv2dPack`` names it:
``layerX.Y.convs.I.weight`` and its offset conv ``layerX.Y.convs.I.conv_offset.{weight,bias}``.
"""

from keras_gfocal.checkpoints.mapping import batch_norm_rows, conv_rows
from keras_gfocal.layers.res2net import Res2NetBackbone
from keras_gfocal.pretrained.torchvision import assign_classifier_weights, checked_download

#: ``open-mmlab://res2net101_v1d_26w_4s`` as mmcv's and mmengine's ``openmmlab.json`` resolve it
#: (ImageNet weights in MMDetection's key names); the 8 hex digits start the file's SHA-256.
IMAGENET_URL = "https://download.openmmlab.com/pretrain/third_party/res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth"
#: The one configuration those weights fit.
IMAGENET_CONFIG = {"depth": 101, "scales": 4, "base_width": 26}


def res2net_rows(backbone, prefix=""):
    """``(checkpoint key, variable, transform)`` rows of a built ``Res2NetBackbone``, in
    MMDetection's names after ``prefix`` (``"backbone."`` in its detectors)."""
    if not isinstance(backbone, Res2NetBackbone):
        raise TypeError(f"res2net_rows reads a Res2NetBackbone, got {type(backbone).__name__}.")
    stem = {layer.name: layer for layer in backbone.stem}
    rows = []
    for conv, bn in (("stem_0", "stem_1"), ("stem_3", "stem_4"), ("stem_6", "stem_7")):
        rows += conv_rows(prefix + conv.replace("_", "."), stem[conv])
        rows += batch_norm_rows(prefix + bn.replace("_", "."), stem[bn])
    for s, stage in enumerate(backbone.stages, start=1):
        for b, block in enumerate(stage):
            p = f"{prefix}layer{s}.{b}"
            rows += conv_rows(f"{p}.conv1", block.conv1) + batch_norm_rows(f"{p}.bn1", block.bn1)
            for i, (conv, bn) in enumerate(zip(block.convs, block.bns)):
                rows += conv_rows(f"{p}.convs.{i}", conv) + batch_norm_rows(f"{p}.bns.{i}", bn)
                if block.deformable:
                    rows += conv_rows(f"{p}.convs.{i}.conv_offset", conv.conv_offset)
            rows += conv_rows(f"{p}.conv3", block.conv3) + batch_norm_rows(f"{p}.bn3", block.bn3)
            if block.first_in_stage:
                rows += conv_rows(f"{p}.downsample.1", block.downsample_conv)
                rows += batch_norm_rows(f"{p}.downsample.2", block.downsample_bn)
    return rows


def imagenet_file(backbone):
    """The local path of the ImageNet Res2Net-101 v1d 26w4s file (``checked_download``); ValueError
    for a backbone of another configuration."""
    config = {key: getattr(backbone, key) for key in IMAGENET_CONFIG}
    if config != IMAGENET_CONFIG:
        raise ValueError(f"Res2Net ImageNet weights exist for {IMAGENET_CONFIG} only, not {config}.")
    return checked_download(IMAGENET_URL)


def load_res2net_weights(backbone, source):
    """Loads Res2Net weights in MMDetection's names into ``backbone`` (builds it if needed), all
    or nothing.

    Args:
        backbone: a ``keras_gfocal.layers.Res2NetBackbone``.
        source: ``"imagenet"`` (OpenMMLab's ImageNet file, downloaded once into the Keras cache;
            for depth 101, 4 scales, base width 26 only), the path of a state dict in
            MMDetection's Res2Net names (``.pth``, read without torch; ``fc.*`` keys are
            ignored), or a ``{key: array}`` dict in those names. A state dict with no
            ``conv_offset`` key at all (the ImageNet file) sets the deformable convs' offset
            convs to zero, as MMDetection initialises them, so they start as plain convs; one
            with some must have all.
    Raises:
        CheckpointError (a ValueError): the file cannot be read, or its keys and shapes
            do not fit the backbone (the first offending keys named).
        ValueError: ``"imagenet"`` for another configuration, or the download's digest is wrong.
        OSError: the download failed.
    """
    assign_classifier_weights(backbone, source, lambda: imagenet_file(backbone), res2net_rows)
