"""Which converter holds a backbone's pretrained weights: one entry per backbone class.

A backbone knows nothing of where its weights come from; ``load_backbone_weights`` (used by
``GFocalDetector.from_preset``) and ``backbone_rows`` (used by the detector converters of
``keras_gfocal.convert``) look its class up here. A new backbone with pretrained weights adds
its converter module beside ``torchvision.py`` and one entry to ``CONVERTERS``.
"""

from keras_gfocal.layers.res2net import Res2NetBackbone
from keras_gfocal.layers.resnet import ResNetBackbone
from keras_gfocal.layers.resnext import ResNeXtBackbone
from keras_gfocal.pretrained import openmmlab, res2net, torchvision

#: ``(backbone class, rows function, loader)``: ``rows(backbone, prefix)`` lists the
#: ``(checkpoint key, variable, transform)`` rows in the weights' own names;
#: ``loader(backbone, source)`` loads a named, local or in-memory source. A subclass (a
#: ``ResNeXtBackbone`` is a ``ResNetBackbone``) takes its own entry, not its parent's.
CONVERTERS = (
    (ResNetBackbone, torchvision.resnet_rows, torchvision.load_resnet_weights),
    (ResNeXtBackbone, openmmlab.resnext_rows, openmmlab.load_resnext_weights),
    (Res2NetBackbone, res2net.res2net_rows, res2net.load_res2net_weights),
)


def _converter(backbone):
    table = {backbone_class: (rows, loader) for backbone_class, rows, loader in CONVERTERS}
    for backbone_class in type(backbone).__mro__:  # the most derived class with an entry
        if backbone_class in table:
            return table[backbone_class]
    known = ", ".join(backbone_class.__name__ for backbone_class, _, _ in CONVERTERS)
    raise ValueError(f"{type(backbone).__name__} has no pretrained-weight converter (backbones with one: {known}).")


def backbone_rows(backbone, prefix=""):
    """``(checkpoint key, variable, transform)`` rows of a built backbone, in the names of its
    pretrained weights after ``prefix``; ValueError for a backbone without a converter."""
    return _converter(backbone)[0](backbone, prefix)


def load_backbone_weights(backbone, source):
    """Loads pretrained weights into ``backbone``, all or nothing.

    Args:
        backbone: a backbone layer with an entry in ``CONVERTERS``.
        source: what its converter takes; for a ``ResNetBackbone``: ``"imagenet"``, the path of
            a torchvision ``.pth`` file, or a ``{key: array}`` state dict; for a
            ``ResNeXtBackbone`` or a ``Res2NetBackbone`` the same three in MMDetection's names
            (OpenMMLab's ImageNet files).
    Raises:
        ValueError: the backbone has no converter, or the weights do not fit it (a
            ``CheckpointError`` naming the source and the first offending keys).
        OSError: a file that cannot be opened or downloaded.
    """
    _converter(backbone)[1](backbone, source)
