"""OpenMMLab's ImageNet ResNeXt weights: the checked download, a local file, and the table entry
that sends a ``ResNeXtBackbone`` (a ``ResNetBackbone`` subclass) to them and not to torchvision's.
No network: keras' ``get_file`` is replaced by one that hands back a local file."""

import hashlib
import json

import numpy as np
import pytest
from hostile_files import constant_checkpoint
from reference_weights import load_fixture

from keras_gfocal import GFocalDetector
from keras_gfocal.layers import ResNetBackbone, ResNeXtBackbone, TinyBackbone
from keras_gfocal.pretrained import backbone_rows, load_backbone_weights, openmmlab

REAL_URL = "https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth"


@pytest.fixture(scope="module")
def resnext_file(tmp_path_factory):
    """``(path, {key: value})``: ResNeXt-101 32x4d in MMDetection's keys plus a classifier's ``fc``."""
    shapes = json.loads(str(load_fixture("mmdet_resnext101_32x4d.npz")["shapes"]))
    data, values = constant_checkpoint(shapes + [["fc.weight", [1000, 2048]], ["fc.bias", [1000]]])
    path = tmp_path_factory.mktemp("weights") / "resnext101_local.pth"
    path.write_bytes(data)
    return path, values


def test_imagenet_is_openmmlabs_file_and_a_wrong_digest_is_refused(tmp_path, fake_download):
    damaged = tmp_path / "resnext101_32x4d-a5af3160.pth"
    damaged.write_bytes(b"not the ImageNet weights")
    calls = fake_download(damaged)
    with pytest.raises(ValueError, match=rf"^{damaged} is damaged \(its SHA-256 does not start with a5af3160\)"):
        load_backbone_weights(ResNeXtBackbone(), "imagenet")
    assert calls == [("resnext101_32x4d-a5af3160.pth", REAL_URL, "models")]
    # The preset's default weights are the same file.
    with pytest.raises(ValueError, match=r"weights 'imagenet' for preset 'gfocal_v1_x101_32x4d_fpn': .* is damaged"):
        GFocalDetector.from_preset("gfocal_v1_x101_32x4d_fpn", num_classes=2)


def test_imagenet_file_with_the_named_digest_is_loaded(monkeypatch, resnext_file, fake_download):
    path, values = resnext_file
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    url = f"https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-{prefix}.pth"
    monkeypatch.setitem(openmmlab.IMAGENET_URLS, (101, 32, 4), url)
    calls = fake_download(path)
    backbone = ResNeXtBackbone()
    load_backbone_weights(backbone, "imagenet")
    assert calls == [(f"resnext101_32x4d-{prefix}.pth", url, "models")]
    for variable, key in [
        (backbone.stem[1].kernel, "conv1.weight"),
        (backbone.stages[1][0].downsample_bn.moving_mean, "layer2.0.downsample.1.running_mean"),
        (backbone.stages[2][17].conv2.kernel, "layer3.17.conv2.weight"),
    ]:
        assert np.all(np.asarray(variable) == values[key]), key


def test_a_configuration_without_published_weights_is_named():
    with pytest.raises(ValueError, match=r"^No ImageNet weights for ResNeXt-50 32x4d \(published: ResNeXt-101 32x4d\)"):
        load_backbone_weights(ResNeXtBackbone(50), "imagenet")


def test_each_class_takes_its_own_converter():
    resnext, resnet = ResNeXtBackbone(), ResNetBackbone(101)
    resnext.build((None, None, None, 3))
    resnet.build((None, None, None, 3))
    rows = dict((key, variable) for key, variable, _ in backbone_rows(resnext, "backbone."))
    assert tuple(rows["backbone.layer1.0.conv2.weight"].shape) == (3, 3, 4, 128)
    # stem conv + BatchNorm (4 tensors), 33 blocks x 3 x (conv + BatchNorm), 4 projection shortcuts
    assert len(rows) == len(backbone_rows(resnet)) == 5 + 33 * 3 * 5 + 4 * 5
    with pytest.raises(TypeError, match="resnext_rows reads a ResNeXtBackbone, got ResNetBackbone"):
        openmmlab.resnext_rows(resnet)


def test_the_table_names_resnext_among_the_backbones_with_weights():
    with pytest.raises(ValueError, match=r"^TinyBackbone has no pretrained-weight converter \(.*ResNeXtBackbone.*\)"):
        load_backbone_weights(TinyBackbone(), "imagenet")
