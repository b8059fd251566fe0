"""Named detector configurations for `GFocalDetector.from_preset`."""

_RESNET_HEAD = {"fpn_channels": 256, "head_channels": 256, "stacked_convs": 4, "groups": 32}
_TINY_HEAD = {"tiny_base_width": 16, "fpn_channels": 64, "head_channels": 64, "stacked_convs": 2, "groups": 32}

PRESETS = {
    "gfocal_v2_r50_fpn": {
        "description": "GFocalV2, ResNet-50-FPN, as the reference (41.0 AP on COCO with the 1x schedule).",
        "config": {"backbone": "resnet50", "dgqp": True, **_RESNET_HEAD},
        "default_backbone_weights": "imagenet",
    },
    "gfocal_v2_r101_fpn": {
        "description": "GFocalV2, ResNet-101-FPN.",
        "config": {"backbone": "resnet101", "dgqp": True, **_RESNET_HEAD},
        "default_backbone_weights": "imagenet",
    },
    "gfocal_v1_r50_fpn": {
        "description": "GFocalV1 (no DGQP, QFL on logits), ResNet-50-FPN.",
        "config": {"backbone": "resnet50", "dgqp": False, **_RESNET_HEAD},
        "default_backbone_weights": "imagenet",
    },
    "gfocal_v2_tiny": {
        "description": "GFocalV2 on a small conv backbone, 64-wide FPN and head: CPU demos and tests.",
        "config": {"backbone": "tiny", "dgqp": True, **_TINY_HEAD},
        "default_backbone_weights": None,
    },
    "gfocal_v1_tiny": {
        "description": "GFocalV1 on the tiny backbone: CPU comparisons with gfocal_v2_tiny.",
        "config": {"backbone": "tiny", "dgqp": False, **_TINY_HEAD},
        "default_backbone_weights": None,
    },
}


def preset_config(name):
    """The constructor arguments of preset ``name``; ValueError naming the choices if unknown."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Available presets: {', '.join(sorted(PRESETS))}.")
    return dict(PRESETS[name]["config"])
