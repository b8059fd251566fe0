"""The backbone contract, the detector's backbone object, initialisation and old files."""

import itertools
import json
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.layers import ResNetBackbone, TinyBackbone


def test_no_two_layers_start_equal():
    # The reference head: 4-deep cls and reg towers whose 256->256 convs share a shape.
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, stacked_convs=4)
    model.build((None, 64, 64, 3))
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    assert len(kernels) == 10 + 8 + 2 * 4 + 2 + 2  # backbone, FPN, towers, outputs, DGQP
    same_shape = 0
    for a, b in itertools.combinations(kernels, 2):
        if a.shape == b.shape:
            same_shape += 1
            assert not np.array_equal(np.asarray(a), np.asarray(b)), (a.path, b.path)
    assert same_shape >= 2 * 4 * 2 - 1  # at least the tower convs were compared with each other


def test_head_convs_draw_normal_001():
    model = GFocalDetector.from_preset("gfocal_v2_r50_fpn", num_classes=80, backbone_weights=None)
    model.build((None, None, None, 3))
    kernel = np.asarray(model.head.cls_tower[0].kernel)
    assert kernel.shape == (3, 3, 256, 256)
    np.testing.assert_allclose(kernel.std(), 0.01, rtol=0.02)
    assert abs(kernel.mean()) < 1e-4
    # Xavier-uniform FPN convs: bound sqrt(6 / (fan_in + fan_out)).
    lateral = np.asarray(model.fpn.laterals[2].kernel)
    bound = np.sqrt(6 / (2048 + 256))
    assert lateral.max() <= bound and lateral.max() > 0.99 * bound


def test_a_backbone_object_is_used_and_saved(tmp_path):
    backbone = TinyBackbone(base_width=8, name="my_backbone")
    model = GFocalDetector(backbone, num_classes=2, fpn_channels=32, head_channels=32, stacked_convs=1, groups=8)
    images = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype("float32")
    before = model(images)
    assert model.backbone is backbone and model.fpn.laterals[2].kernel.shape == (1, 1, 128, 32)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.backbone, TinyBackbone) and loaded.backbone.base_width == 8
    np.testing.assert_array_equal(np.asarray(loaded(images)["reg_logits"]), np.asarray(before["reg_logits"]))


@pytest.mark.parametrize(
    "backbone, message",
    [("resnet50", "not the name 'resnet50'.*from_preset"), (keras.layers.Dense(3), "output_channels.*Dense")],
)
def test_a_bad_backbone_gets_a_clear_error(backbone, message):
    with pytest.raises(ValueError, match=message):
        GFocalDetector(backbone, num_classes=2)


def test_keras_files_from_before_the_reference_network_say_so(tmp_path):
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    model.build((None, 64, 64, 3))
    new = os.path.join(tmp_path, "new.keras")
    model.save(new)
    # A 0.1 file: same archive, the config names its backbone by string.
    old = os.path.join(tmp_path, "old.keras")
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["backbone"] = "tiny"
                config["config"]["tiny_base_width"] = 16
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(Exception, match="saved by keras-gfocal 0.1"):
        keras.saving.load_model(old)


def test_resnet_pads_stride_2_convs_symmetrically():
    # One-hot input at (0, 0): with PyTorch's padding=1 on each side, the stride-2 3x3
    # conv's output (0, 0) sees input (0, 0) through kernel tap (1, 1); Keras' "same"
    # would pad only after and use tap (0, 0).
    backbone = ResNetBackbone(50)
    block = backbone.stages[1][0]  # layer2.0: the stride-2 3x3 conv
    block.build((None, 8, 8, 256))
    kernel = np.zeros(block.conv2.kernel.shape, "float32")
    kernel[1, 1, 0, 0] = 1.0
    block.conv2.kernel.assign(kernel)
    x = np.zeros((1, 8, 8, 128), "float32")
    x[0, 0, 0, 0] = 1.0
    y = np.asarray(block.conv2(block.pad2(x)))
    assert y.shape == (1, 4, 4, 128)
    assert y[0, 0, 0, 0] == 1.0 and np.count_nonzero(y) == 1
