"""torchvision ResNet weights for ``keras_gfocal.layers.ResNetBackbone``."""

import hashlib
import os

from keras_gfocal.checkpoints.mapping import assign_all, batch_norm_rows, conv_rows

#: torchvision's ImageNet files, as MMDetection's ``torchvision://resnetNN`` names them;
#: the 8 hex digits in each name start the file's SHA-256.
IMAGENET_URLS = {
    50: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    101: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}


def resnet_rows(backbone, prefix=""):
    """``(checkpoint key, variable, transform)`` rows of a ResNetBackbone, torchvision names."""
    stem = {layer.name: layer for layer in backbone.stem}
    rows = conv_rows(f"{prefix}conv1", stem["conv1"]) + batch_norm_rows(f"{prefix}bn1", stem["bn1"])
    for s, stage in enumerate(backbone.stages, start=1):
        for b, block in enumerate(stage):
            p = f"{prefix}layer{s}.{b}"
            for i in (1, 2, 3):
                rows += conv_rows(f"{p}.conv{i}", getattr(block, f"conv{i}"))
                rows += batch_norm_rows(f"{p}.bn{i}", getattr(block, f"bn{i}"))
            if block.downsample:
                rows += conv_rows(f"{p}.downsample.0", block.downsample_conv)
                rows += batch_norm_rows(f"{p}.downsample.1", block.downsample_bn)
    return rows


def _download_imagenet(depth):
    import keras

    url = IMAGENET_URLS[depth]
    name = os.path.basename(url)
    path = keras.utils.get_file(name, url, cache_subdir="models")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    expected = name.rsplit("-", 1)[1].split(".")[0]
    if not digest.hexdigest().startswith(expected):
        raise ValueError(f"{path} is damaged (its SHA-256 does not start with {expected}); delete it and retry.")
    return path


def load_resnet_weights(backbone, source):
    """Loads torchvision ResNet weights into ``backbone`` (builds it if needed).

    Args:
        backbone: a ``keras_gfocal.layers.ResNetBackbone``.
        source: ``"imagenet"`` (torchvision's ImageNet file, downloaded once
            into the Keras cache), the path of a torchvision ResNet state dict
            (``.pth``, read without torch; its ``fc.*`` keys are ignored), or
            a ``{key: array}`` dict in torchvision's names.
    """
    from keras_gfocal.checkpoints.pth import read_state_dict

    if isinstance(source, dict):
        state_dict, name = source, "the given state dict"
    else:
        path = _download_imagenet(backbone.depth) if source == "imagenet" else os.fspath(source)
        state_dict, name = read_state_dict(path)[0], path
    if not backbone.built:
        backbone.build((None, None, None, 3))
    assign_all(
        state_dict,
        resnet_rows(backbone),
        name,
        ignore=lambda key: key.endswith("num_batches_tracked") or key.startswith("fc."),
    )
