"""Named detector configurations for ``GFocalDetector.from_preset``.

Each preset names a backbone (a class of ``keras_gfocal.layers`` and its
arguments), the default weights it loads, and the detector's other constructor
arguments. Where it was counted in PyTorch, ``parameters`` is the reference
detector's parameter count with 80 classes (BatchNorm statistics excluded; for
the official GFocalV2 models, their 81-channel classifier included, of which a
converted model drops the background channel, 2,305 parameters). The
backbone is named, not imported, so that reading ``PRESETS`` (the ``gfocal``
command's ``--preset`` choices) starts no TensorFlow.
"""

_RESNET_HEAD = {"fpn_channels": 256, "head_channels": 256, "stacked_convs": 4, "groups": 32}
#: Deformable 3x3 convs in layer2-layer4 (c3-c5), as the R101-DCN models.
_DCN_C3_C5 = {"dcn_stages": (2, 3, 4)}
#: Deformable 3x3 convs in layer3-layer4 (c4-c5), as the X101-32x4d-DCN models.
_DCN_C4_C5 = {"dcn_stages": (3, 4)}
_RESNEXT_101_32X4D = {"depth": 101, "groups": 32, "base_width": 4}
_TINY_HEAD = {"fpn_channels": 64, "head_channels": 64, "stacked_convs": 2, "groups": 32}

PRESETS = {
    "gfocal_v2_r50_fpn": {
        "description": "GFocalV2, ResNet-50-FPN, as the reference (41.0 AP on COCO with the 1x schedule).",
        "backbone": ("ResNetBackbone", {"depth": 50}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": True, **_RESNET_HEAD},
        "parameters": 32_444_251,
    },
    "gfocal_v2_r101_fpn": {
        "description": "GFocalV2, ResNet-101-FPN.",
        "backbone": ("ResNetBackbone", {"depth": 101}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": True, **_RESNET_HEAD},
        "parameters": 51_436_379,
    },
    "gfocal_v2_r101_dcn_fpn": {
        "description": (
            "GFocalV2, ResNet-101-FPN with deformable convs (DCNv1) in c3-c5: the official R101-DCN 2x "
            "multi-scale model (48.0 AP on COCO minival); the reference's count includes the background "
            "channel of its head, which a converted model drops (2,305 parameters fewer)."
        ),
        "backbone": ("ResNetBackbone", {"depth": 101, **_DCN_C3_C5}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": True, **_RESNET_HEAD},
        "parameters": 52_722_551,
    },
    "gfocal_v2_x101_32x4d_dcn_fpn": {
        "description": (
            "GFocalV2, ResNeXt-101 32x4d-FPN with deformable convs (DCNv1) in c4-c5: the official "
            "X101-32x4d-DCN 2x multi-scale model (48.8 AP on COCO minival); the reference's count includes "
            "the background channel of its head, which a converted model drops (2,305 parameters fewer)."
        ),
        "backbone": ("ResNeXtBackbone", {**_RESNEXT_101_32X4D, **_DCN_C4_C5}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": True, **_RESNET_HEAD},
        "parameters": 53_470_767,
    },
    "gfocal_v1_r50_fpn": {
        "description": "GFocalV1 (no DGQP, QFL on logits), ResNet-50-FPN.",
        "backbone": ("ResNetBackbone", {"depth": 50}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": False, **_RESNET_HEAD},
        "parameters": 32_440_537,
    },
    "gfocal_v1_r101_fpn": {
        "description": "GFocalV1, ResNet-101-FPN: MMDetection's gfl_r101_fpn_ms-2x_coco (44.7 AP on COCO).",
        "backbone": ("ResNetBackbone", {"depth": 101}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": False, **_RESNET_HEAD},
        "parameters": 51_432_665,
    },
    "gfocal_v1_x101_32x4d_fpn": {
        "description": (
            "GFocalV1, ResNeXt-101 32x4d-FPN: MMDetection's gfl_x101-32x4d_fpn_ms-2x_coco (45.9 AP on COCO)."
        ),
        "backbone": ("ResNeXtBackbone", _RESNEXT_101_32X4D),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": False, **_RESNET_HEAD},
        "parameters": 51_061_209,
    },
    "gfocal_v1_r101_dcn_fpn": {
        "description": (
            "GFocalV1, ResNet-101-FPN with deformable convs in c3-c5: MMDetection's "
            "gfl_r101-dconv-c3-c5_fpn_ms-2x_coco (47.1 AP on COCO)."
        ),
        "backbone": ("ResNetBackbone", {"depth": 101, **_DCN_C3_C5}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": False, **_RESNET_HEAD},
        "parameters": 52_718_837,
    },
    "gfocal_v1_x101_32x4d_dcn_fpn": {
        "description": (
            "GFocalV1, ResNeXt-101 32x4d-FPN with deformable convs in c4-c5: MMDetection's "
            "gfl_x101-32x4d-dconv-c4-c5_fpn_ms-2x_coco (48.1 AP on COCO)."
        ),
        "backbone": ("ResNeXtBackbone", {**_RESNEXT_101_32X4D, **_DCN_C4_C5}),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": False, **_RESNET_HEAD},
        "parameters": 53_467_053,
    },
    "gfocal_v2_r2n101_dcn_fpn": {
        "description": (
            "GFocalV2, Res2Net-101 v1d 26w x 4s-FPN with deformable convs (DCNv1) in c4-c5, as the official "
            "gfocal_r2n101_dcn_fpn_ms2x (49.9 AP on COCO minival, 50.5 test-dev)."
        ),
        "backbone": (
            "Res2NetBackbone",
            {"depth": 101, "scales": 4, "base_width": 26, **_DCN_C4_C5},
        ),
        "default_backbone_weights": "imagenet",
        "config": {"dgqp": True, **_RESNET_HEAD},
        "parameters": 53_580_319,
    },
    "gfocal_v2_tiny": {
        "description": "GFocalV2 on a small conv backbone, 64-wide FPN and head: CPU demos and tests.",
        "backbone": ("TinyBackbone", {"base_width": 16}),
        "default_backbone_weights": None,
        "config": {"dgqp": True, **_TINY_HEAD},
    },
    "gfocal_v1_tiny": {
        "description": "GFocalV1 on the tiny backbone: CPU comparisons with gfocal_v2_tiny.",
        "backbone": ("TinyBackbone", {"base_width": 16}),
        "default_backbone_weights": None,
        "config": {"dgqp": False, **_TINY_HEAD},
    },
}


def _preset(name):
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Available presets: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]


def preset_config(name):
    """The constructor arguments of preset ``name`` but the backbone; ValueError naming the choices if unknown."""
    return dict(_preset(name)["config"])


def preset_backbone(name, weights="default"):
    """A new backbone layer for preset ``name``.

    Args:
        weights: ``"default"`` (the preset's own), None (random init),
            ``"imagenet"`` or a local weights file, loaded by
            ``keras_gfocal.pretrained.load_backbone_weights``.
    Raises:
        ValueError: an unknown preset, or weights that cannot be loaded (naming
            them, the preset and the cause).
    """
    from keras_gfocal import layers
    from keras_gfocal.pretrained import load_backbone_weights

    preset = _preset(name)
    class_name, kwargs = preset["backbone"]
    if weights == "default":
        weights = preset["default_backbone_weights"]
    backbone = getattr(layers, class_name)(**kwargs, name="backbone")
    if weights is not None:
        try:
            load_backbone_weights(backbone, weights)
        except (OSError, ValueError) as err:  # download failures, bad or mismatched files
            raise ValueError(
                f"Could not load backbone weights {weights!r} for preset {name!r}: {err} "
                "Pass backbone_weights=None to start from random weights."
            ) from err
    return backbone
