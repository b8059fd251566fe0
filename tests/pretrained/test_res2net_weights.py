"""Res2Net-101 v1d 26w4s against MMDetection 3.3's ``Res2Net``, through its weight converter.

``tests/fixtures/mmdet_res2net101.npz`` holds what the real MMDetection module (torch, seeded
weights, eval mode) gives on two images, its parameter count and which parameters its
``_freeze_stages`` leaves trainable; ``tests/fixtures/make_res2net_fixtures.py`` wrote it. No
network: keras' ``get_file`` is replaced by one that hands back a local file.
"""

import hashlib
import json

import numpy as np
import pytest
from hostile_files import constant_checkpoint
from reference_weights import fixture_state_dict, load_fixture

from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.layers import Res2NetBackbone, TinyBackbone
from keras_gfocal.pretrained import backbone_rows, load_backbone_weights, res2net

RTOL = 1e-4
REAL_URL = "https://download.openmmlab.com/pretrain/third_party/res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth"


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("mmdet_res2net101.npz")


@pytest.fixture(scope="module")
def seeded(fixture):
    """A Res2Net-101 holding the fixture's seeded weights, loaded through the converter."""
    backbone = Res2NetBackbone()
    load_backbone_weights(backbone, fixture_state_dict(fixture))
    return backbone


def _relative_error(actual, expected):
    """Largest absolute difference over the largest magnitude of the reference."""
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("image", ["image", "odd_image"])
def test_seeded_res2net101_gives_mmdets_c3_c4_c5(fixture, seeded, image):
    # odd_image's stages start on 9x13, 5x7 and 3x4 maps: the pools' edge rules show there.
    prefix = "" if image == "image" else "odd_"
    outputs = seeded(fixture[image])
    for name, actual in zip(("c3", "c4", "c5"), outputs):
        expected = fixture[prefix + name]
        assert actual.shape == expected.shape, name
        assert _relative_error(actual, expected) <= RTOL, name


def test_parameter_count_equals_torchs(fixture, seeded):
    statistics = ("moving_mean", "moving_variance")  # torch buffers, not parameters
    count = sum(int(np.prod(w.shape)) for w in seeded.weights if not w.path.endswith(statistics))
    assert count == int(fixture["parameters"]) == 43_176_920


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1])
def test_frozen_stages_freeze_what_mmdet_freezes(fixture, seeded, frozen_stages):
    # -1 nothing, 0 the deep stem, 1 (the reference, ``seeded``) the stem and layer1.
    if frozen_stages == seeded.frozen_stages:
        backbone = seeded
    else:
        backbone = Res2NetBackbone(frozen_stages=frozen_stages)
        backbone.build((None, None, None, 3))
    trainable = {id(w) for w in backbone.trainable_weights}
    keys = {key for key, variable, _ in backbone_rows(backbone) if id(variable) in trainable}
    expected = set(json.loads(str(fixture["trainable"]))[str(frozen_stages)])
    assert keys == expected
    assert len(backbone.trainable_weights) == len(expected)  # no trainable weight outside the rows


def _snapshot(backbone):
    return [np.asarray(w).copy() for w in backbone.weights]


def test_a_state_dict_that_does_not_fit_changes_nothing_and_is_named(fixture, seeded):
    before = _snapshot(seeded)
    # Values unlike the seeded ones, so that any partial write would show.
    good = {
        k: np.broadcast_to(np.float32(i + 2), shape) for i, (k, shape) in enumerate(json.loads(str(fixture["shapes"])))
    }
    missing = {k: v for k, v in good.items() if k != "layer3.22.bns.2.running_var"}
    with pytest.raises(
        CheckpointMismatchError, match=r"missing from the checkpoint: layer3\.22\.bns\.2\.running_var\."
    ):
        load_backbone_weights(seeded, missing)
    wrong = dict(good, **{"layer2.0.convs.1.weight": np.zeros((52, 52, 1, 1), np.float32)})
    with pytest.raises(
        CheckpointMismatchError, match=r"shapes that differ: layer2\.0\.convs\.1\.weight \(52, 52, 1, 1\)"
    ):
        load_backbone_weights(seeded, wrong)
    # A ResNet key (conv2 is split into convs.N in a Res2Net block) has no place here.
    extra = dict(good, **{"layer1.0.conv2.weight": np.zeros((64, 64, 3, 3), np.float32)})
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^the given state dict does not fit the model; not used by the model: layer1\.0\.conv2\.weight\.",
    ):
        load_backbone_weights(seeded, extra)
    for a, b in zip(before, _snapshot(seeded)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def res2net_file(fixture, tmp_path_factory):
    """``(path, {key: value})`` of a Res2Net-101 ``.pth`` in MMDetection's keys plus an ImageNet
    ``fc``, one value per tensor."""
    shapes = json.loads(str(fixture["shapes"])) + [["fc.weight", [1000, 2048]], ["fc.bias", [1000]]]
    data, values = constant_checkpoint(shapes)
    path = tmp_path_factory.mktemp("weights") / "res2net101_local.pth"
    path.write_bytes(data)
    return path, values


def test_imagenet_is_openmmlabs_file_checked_against_its_digest(fake_download, tmp_path):
    damaged = tmp_path / "res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth"
    damaged.write_bytes(b"not the ImageNet weights")
    calls = fake_download(damaged)
    with pytest.raises(ValueError, match=rf"^{damaged} is damaged \(its SHA-256 does not start with f0a600f9\)"):
        load_backbone_weights(Res2NetBackbone(), "imagenet")
    assert calls == [("res2net101_v1d_26w_4s_mmdetv2-f0a600f9.pth", REAL_URL, "models")]
    with pytest.raises(ValueError, match=r"exist for \{'depth': 101, 'scales': 4, 'base_width': 26\} only"):
        load_backbone_weights(Res2NetBackbone(depth=50), "imagenet")
    assert len(calls) == 1


def test_backbones_with_a_converter_include_res2net():
    with pytest.raises(ValueError, match=r"^TinyBackbone has no pretrained-weight converter \(.*Res2NetBackbone.*\)"):
        load_backbone_weights(TinyBackbone(), "imagenet")


def test_imagenet_file_with_the_named_digest_fills_every_variable_from_its_key(
    monkeypatch, fake_download, res2net_file
):
    path, values = res2net_file
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    url = f"https://download.openmmlab.com/pretrain/third_party/res2net101_v1d_26w_4s_mmdetv2-{prefix}.pth"
    monkeypatch.setattr(res2net, "IMAGENET_URL", url)
    calls = fake_download(path)
    backbone = Res2NetBackbone()
    load_backbone_weights(backbone, "imagenet")
    assert calls == [(f"res2net101_v1d_26w_4s_mmdetv2-{prefix}.pth", url, "models")]
    for key, variable, _ in backbone_rows(backbone, prefix="backbone."):
        assert np.all(np.asarray(variable) == values[key.removeprefix("backbone.")]), key
    used = [v for k, v in values.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    held = sorted(float(np.asarray(w).flat[0]) for w in backbone.weights)
    assert held == sorted(used) and len(used) == 860
