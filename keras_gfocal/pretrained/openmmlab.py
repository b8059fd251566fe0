"""OpenMMLab's ImageNet ResNeXt weights for ``keras_gfocal.layers.ResNeXtBackbone``: their key map
and files.

MMDetection's ``ResNeXt`` keeps torchvision's ResNet state-dict names (``conv1``, ``bn1``,
``layer{1..4}.{i}.conv{1,2,3}`` / ``bn{1,2,3}``, ``downsample.{0,1}``), so the key map is
``torchvision.resnet_rows``'; the grouped ``conv2`` kernels are ``[out, in / groups, 3, 3]``
there and ``[3, 3, in / groups, out]`` in Keras, the same transpose as any conv.
"""

from keras_gfocal.layers.resnext import ResNeXtBackbone
from keras_gfocal.pretrained.torchvision import assign_classifier_weights, checked_download, resnet_rows

#: OpenMMLab's ImageNet files by ``(depth, groups, base_width)``, as MMCV's ``open-mmlab://``
#: names resolve them (``open-mmlab://resnext101_32x4d``); the 8 hex digits in each name start
#: the file's SHA-256.
IMAGENET_URLS = {
    (101, 32, 4): "https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth",
}


def resnext_rows(backbone, prefix=""):
    """``(checkpoint key, variable, transform)`` rows of a built ``ResNeXtBackbone``, in
    MMDetection's names after ``prefix`` (``"backbone."`` in its detectors)."""
    if not isinstance(backbone, ResNeXtBackbone):
        raise TypeError(f"resnext_rows reads a ResNeXtBackbone, got {type(backbone).__name__}.")
    return resnet_rows(backbone, prefix)


def imagenet_file(backbone):
    """The local path of OpenMMLab's ImageNet file for ``backbone``'s depth, groups and base width,
    downloaded once and digest-checked; ValueError naming the configurations that have one."""
    config = (backbone.depth, backbone.groups, backbone.base_width)
    if config not in IMAGENET_URLS:
        known = ", ".join(f"ResNeXt-{d} {g}x{w}d" for d, g, w in IMAGENET_URLS)
        raise ValueError(f"No ImageNet weights for ResNeXt-{config[0]} {config[1]}x{config[2]}d (published: {known}).")
    return checked_download(IMAGENET_URLS[config])


def load_resnext_weights(backbone, source):
    """Loads ResNeXt weights in MMDetection's names into ``backbone`` (builds it if needed), all or nothing.

    Args:
        backbone: a ``keras_gfocal.layers.ResNeXtBackbone``.
        source: ``"imagenet"`` (OpenMMLab's ImageNet file for its depth, groups and base
            width, downloaded once into the Keras cache), the path of a state dict (``.pth``,
            read without torch; ``fc.*`` keys are ignored), or a ``{key: array}`` dict.
    Raises:
        CheckpointError (a ValueError): the file cannot be read, or its keys and shapes
            do not fit the backbone (the first offending keys named).
        ValueError: no ImageNet file for this configuration, or the download's digest is wrong.
        OSError: the download failed.
    """
    assign_classifier_weights(backbone, source, lambda: imagenet_file(backbone), resnext_rows)
