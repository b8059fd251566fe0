"""torchvision's ResNet weights for ``keras_gfocal.layers.ResNetBackbone``: its key map and
its ImageNet files.

A deformable ``conv2`` (``dcn_stages``) is named as mmcv's ``DeformConv2dPack`` names it:
``layerX.Y.conv2.weight`` and its offset conv ``layerX.Y.conv2.conv_offset.{weight,bias}``.
"""

import hashlib
import os

import keras

from keras_gfocal.checkpoints import read_state_dict
from keras_gfocal.checkpoints.mapping import assign_all, batch_norm_rows, conv_rows
from keras_gfocal.layers.resnet import ResNetBackbone

#: torchvision's ImageNet files, as MMDetection's ``torchvision://resnetNN`` names them;
#: the 8 hex digits in each name start the file's SHA-256.
IMAGENET_URLS = {
    50: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    101: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}


def resnet_rows(backbone, prefix=""):
    """``(checkpoint key, variable, transform)`` rows of a built ``ResNetBackbone``, in torchvision's
    names after ``prefix`` (``"backbone."`` in MMDetection's detectors)."""
    if not isinstance(backbone, ResNetBackbone):
        raise TypeError(f"resnet_rows reads a ResNetBackbone, got {type(backbone).__name__}.")
    stem = {layer.name: layer for layer in backbone.stem}
    rows = conv_rows(f"{prefix}conv1", stem["conv1"]) + batch_norm_rows(f"{prefix}bn1", stem["bn1"])
    for s, stage in enumerate(backbone.stages, start=1):
        for b, block in enumerate(stage):
            p = f"{prefix}layer{s}.{b}"
            for i in (1, 2, 3):
                rows += conv_rows(f"{p}.conv{i}", getattr(block, f"conv{i}"))
                rows += batch_norm_rows(f"{p}.bn{i}", getattr(block, f"bn{i}"))
            if block.deformable:
                rows += conv_rows(f"{p}.conv2.conv_offset", block.conv2.conv_offset)
            if block.downsample:
                rows += conv_rows(f"{p}.downsample.0", block.downsample_conv)
                rows += batch_norm_rows(f"{p}.downsample.1", block.downsample_bn)
    return rows


def check_sha256_prefix(path, prefix):
    """Returns ``path`` if its SHA-256 starts with ``prefix`` (hex), else raises naming it.

    Raises:
        ValueError: the digest differs (a damaged or replaced download).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise ValueError(f"{path} is damaged (its SHA-256 does not start with {prefix}); delete it and retry.")
    return path


def checked_download(url):
    """The local path of ``url``'s file, downloaded once into the Keras cache (``~/.keras/models``)
    and checked against the digest prefix its name ends with (``name-<sha256 prefix>.pth``, as
    torch.hub names files)."""
    name = os.path.basename(url)
    path = keras.utils.get_file(name, url, cache_subdir="models")
    return check_sha256_prefix(path, name.rsplit("-", 1)[1].split(".")[0])


def imagenet_file(depth):
    """The local path of torchvision's ImageNet ResNet-``depth`` file (``checked_download``)."""
    return checked_download(IMAGENET_URLS[depth])


def assign_classifier_weights(backbone, source, imagenet_path, rows):
    """Loads an ImageNet classifier's weights into ``backbone`` (builds it if needed), all or nothing.

    Args:
        backbone: the backbone layer.
        source: ``"imagenet"``, the path of a state dict (``.pth``, read without torch), or a
            ``{key: array}`` dict.
        imagenet_path: ``f()`` -> the local path of the ImageNet file, for ``"imagenet"``.
        rows: ``rows(backbone)`` -> its ``(checkpoint key, variable, transform)`` rows.

    A classifier has no deformable convs: a state dict with no ``conv_offset`` key at all sets
    the backbone's offset convs (``dcn_stages``) to zero, as MMDetection initialises them, so
    that they start as plain convs; one with some must have them all.

    Raises:
        CheckpointError (a ValueError): unreadable, or keys and shapes that do not fit (the
            classifier's ``fc.*`` keys and BatchNorm step counters are ignored).
    """
    if isinstance(source, dict):
        state_dict, name = source, "the given state dict"
    else:
        path = imagenet_path() if source == "imagenet" else os.fspath(source)
        state_dict, name = read_state_dict(path)[0], path
    if not backbone.built:
        backbone.build((None, None, None, 3))
    rows = rows(backbone)
    offset_rows = []
    if not any(".conv_offset." in key for key in state_dict):
        offset_rows = [row for row in rows if ".conv_offset." in row[0]]
        rows = [row for row in rows if ".conv_offset." not in row[0]]
    assign_all(
        state_dict,
        rows,
        name,
        ignore=lambda key: key.endswith("num_batches_tracked") or key.startswith("fc."),
    )
    for _, variable, _ in offset_rows:
        variable.assign(keras.ops.zeros_like(variable))


def load_resnet_weights(backbone, source):
    """Loads torchvision ResNet weights into ``backbone`` (builds it if needed), all or nothing.

    Args:
        backbone: a ``keras_gfocal.layers.ResNetBackbone``.
        source: ``"imagenet"`` (torchvision's ImageNet file, downloaded once
            into the Keras cache), the path of a torchvision ResNet state dict
            (``.pth``, read without torch; its ``fc.*`` keys are ignored), or
            a ``{key: array}`` dict in torchvision's names. The offset
            convs of a DCN backbone start at zero unless the state dict has
            them (see ``assign_classifier_weights``).
    Raises:
        CheckpointError (a ValueError): the file cannot be read, or its keys and shapes
            do not fit the backbone (the first offending keys named).
        ValueError: the ImageNet download's digest is wrong.
        OSError: the download failed.
    """
    assign_classifier_weights(backbone, source, lambda: imagenet_file(backbone.depth), resnet_rows)
