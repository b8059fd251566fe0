"""torchvision ResNet weights: a local file, a missing one, and the checked ImageNet download.

The file is torchvision's ResNet-50 state dict in its real keys and shapes (the reference
fixture's list), each tensor holding one value of its own, so every variable shows which key
filled it. No network: keras' ``get_file`` is replaced by one that hands back the local file.
``GFocalDetector.from_preset(backbone_weights=...)`` loads through the same converter.
"""

import hashlib
import json
import pathlib

import numpy as np
import pytest
from hostile_files import constant_checkpoint
from reference_weights import load_fixture

from keras_gfocal import GFocalDetector
from keras_gfocal.layers import ResNetBackbone, TinyBackbone
from keras_gfocal.pretrained import load_backbone_weights, torchvision

REAL_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """``(path, {key: value})`` of a torchvision ResNet-50 ``.pth`` with one value per tensor."""
    shapes = json.loads(str(load_fixture("torchvision_resnet50.npz")["shapes"]))
    data, values = constant_checkpoint(shapes)
    path = tmp_path_factory.mktemp("weights") / "resnet50_local.pth"
    path.write_bytes(data)
    return path, values


def test_a_local_file_fills_every_variable_from_its_own_key(resnet50_file):
    path, values = resnet50_file
    backbone = ResNetBackbone(50)
    load_backbone_weights(backbone, pathlib.Path(path))  # a path object as well as a str
    assert backbone.built
    stage3_block0, stage4_block2 = backbone.stages[2][0], backbone.stages[3][2]
    for variable, key in [
        (backbone.stem[1].kernel, "conv1.weight"),  # after the stem's padding layer
        (stage3_block0.downsample_bn.beta, "layer3.0.downsample.1.bias"),
        (stage4_block2.bn3.moving_variance, "layer4.2.bn3.running_var"),
        (stage4_block2.conv2.kernel, "layer4.2.conv2.weight"),
    ]:
        assert np.all(np.asarray(variable) == values[key]), key
    # Every variable holds one key's value, and every key but fc.* and the step counters filled one.
    held = []
    for variable in backbone.weights:
        array = np.asarray(variable)
        assert np.all(array == array.flat[0]), variable.path
        held.append(float(array.flat[0]))
    used = [v for k, v in values.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert sorted(held) == sorted(used) and len(used) == 265


def test_a_missing_file_is_named(tmp_path):
    missing = str(tmp_path / "nowhere" / "resnet50.pth")
    with pytest.raises(FileNotFoundError, match="nowhere/resnet50.pth"):
        load_backbone_weights(ResNetBackbone(50), missing)


def test_imagenet_downloads_torchvision_file_and_refuses_a_wrong_digest(tmp_path, fake_download):
    damaged = tmp_path / "resnet50-0676ba61.pth"
    damaged.write_bytes(b"not the ImageNet weights")
    calls = fake_download(damaged)
    with pytest.raises(ValueError, match=rf"^{damaged} is damaged \(its SHA-256 does not start with 0676ba61\)"):
        load_backbone_weights(ResNetBackbone(50), "imagenet")
    assert calls == [("resnet50-0676ba61.pth", REAL_URL, "models")]
    assert torchvision.IMAGENET_URLS[101].endswith("/resnet101-63fe2227.pth")


def test_imagenet_file_with_the_named_digest_is_loaded(monkeypatch, resnet50_file, fake_download):
    path, values = resnet50_file
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    url = f"https://download.pytorch.org/models/resnet50-{prefix}.pth"
    monkeypatch.setitem(torchvision.IMAGENET_URLS, 50, url)
    calls = fake_download(path)
    backbone = ResNetBackbone(50)
    load_backbone_weights(backbone, "imagenet")
    assert calls == [(f"resnet50-{prefix}.pth", url, "models")]
    assert np.all(np.asarray(backbone.stem[1].kernel) == values["conv1.weight"])


def test_a_backbone_without_a_converter_is_named():
    with pytest.raises(ValueError, match=r"^TinyBackbone has no pretrained-weight converter \(.*ResNetBackbone.*\)"):
        load_backbone_weights(TinyBackbone(), "imagenet")


def test_from_preset_loads_backbone_weights_through_the_converter(resnet50_file, tmp_path, fake_download):
    path, values = resnet50_file
    model = GFocalDetector.from_preset("gfocal_v2_r50_fpn", num_classes=2, backbone_weights=str(path))
    assert np.all(np.asarray(model.backbone.stem[1].kernel) == values["conv1.weight"])
    missing = str(tmp_path / "nowhere.pth")
    with pytest.raises(
        ValueError, match=rf"^Could not load backbone weights '{missing}' for preset 'gfocal_v2_r50_fpn': "
    ):
        GFocalDetector.from_preset("gfocal_v2_r50_fpn", num_classes=2, backbone_weights=missing)
    with pytest.raises(ValueError, match="'gfocal_v2_tiny': TinyBackbone has no pretrained-weight converter"):
        GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, backbone_weights="imagenet")
    # The R50 presets' default is torchvision's ImageNet file.
    damaged = tmp_path / "resnet50-0676ba61.pth"
    damaged.write_bytes(b"truncated")
    fake_download(damaged)
    with pytest.raises(ValueError, match=r"weights 'imagenet' for preset 'gfocal_v1_r50_fpn': .* is damaged"):
        GFocalDetector.from_preset("gfocal_v1_r50_fpn", num_classes=2)


def test_imagenet_weights_fill_a_dcn_backbone_and_zero_its_offset_convs(resnet50_file):
    path, values = resnet50_file
    backbone = ResNetBackbone(50, dcn_stages=(2,))
    backbone.build((None, None, None, 3))
    offset_conv = backbone.stages[1][0].conv2.conv_offset
    offset_conv.kernel.assign(np.ones(offset_conv.kernel.shape, "float32"))  # trained before: reset to zero
    load_backbone_weights(backbone, str(path))
    # The deformable conv2 takes torchvision's conv2 kernel; the offset convs start at zero, as MMDetection's.
    np.testing.assert_array_equal(np.asarray(backbone.stages[1][3].conv2.kernel), values["layer2.3.conv2.weight"])
    for block in backbone.stages[1]:
        assert not any(np.any(np.asarray(w)) for w in block.conv2.conv_offset.weights)


def test_dcn_offsets_in_a_state_dict_are_loaded_all_or_nothing():
    backbone = ResNetBackbone(50, dcn_stages=(2,))
    shapes = json.loads(str(load_fixture("torchvision_resnet50.npz")["shapes"]))
    state_dict = {key: np.full(shape, 0.5, "float32") for key, shape in shapes}
    with_offsets = dict(state_dict)
    for block in range(4):
        with_offsets[f"layer2.{block}.conv2.conv_offset.weight"] = np.full((18, 128, 3, 3), 0.25, "float32")
        with_offsets[f"layer2.{block}.conv2.conv_offset.bias"] = np.full((18,), 0.125, "float32")
    load_backbone_weights(backbone, with_offsets)
    offset_conv = backbone.stages[1][3].conv2.conv_offset
    assert np.all(np.asarray(offset_conv.kernel) == 0.25) and np.all(np.asarray(offset_conv.bias) == 0.125)
    # Some offset convs but not all: the missing ones are named and nothing changes.
    partial = {k: v for k, v in with_offsets.items() if not k.startswith("layer2.3.conv2.conv_offset")}
    partial["layer2.0.conv2.weight"] = np.zeros((128, 128, 3, 3), "float32")
    with pytest.raises(
        ValueError,
        match=r"missing from the checkpoint: layer2\.3\.conv2\.conv_offset\.bias, "
        r"layer2\.3\.conv2\.conv_offset\.weight\.$",
    ):
        load_backbone_weights(backbone, partial)
    assert np.all(np.asarray(backbone.stages[1][0].conv2.kernel) == 0.5)
    # Offset convs into a backbone without DCN: not used by the model.
    with pytest.raises(ValueError, match=r"not used by the model: layer2\.0\.conv2\.conv_offset\.bias, "):
        load_backbone_weights(ResNetBackbone(50), with_offsets)
