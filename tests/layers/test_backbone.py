"""The backbone contract (``Backbone``, ``TinyBackbone``), the detector's backbone object, initialisation
and old files."""

import itertools
import json
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.layers import Backbone, TinyBackbone


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


class _Strided(Backbone):
    """The smallest backbone that keeps the contract: average pooling to strides 8, 16, 32."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.output_channels = (3, 3, 3)

    def call(self, images):
        return [keras.ops.average_pool(images, s, s) for s in self.output_strides]


def test_the_contract_a_subclass_inherits():
    backbone = _Strided()
    assert backbone.output_strides == (8, 16, 32)
    assert backbone.compute_output_shape((2, 64, 96, 3)) == [(2, 8, 12, 3), (2, 4, 6, 3), (2, 2, 3, 3)]
    assert backbone.compute_output_shape((None, None, 96, 3)) == [
        (None, None, 12, 3),
        (None, None, 6, 3),
        (None, None, 3, 3),
    ]
    # A detector runs on it as on any backbone.
    model = GFocalDetector(backbone, num_classes=2, fpn_channels=8, head_channels=8, stacked_convs=1, groups=4)
    assert model(np.zeros((1, 64, 96, 3), "float32"))["cls_scores"].shape == (1, 8 * 12 + 4 * 6 + 2 * 3 + 2 + 1, 2)


@pytest.fixture(scope="module")
def tiny():
    backbone = TinyBackbone(base_width=4, blocks_per_stage=1, name="tiny")
    backbone.build((None, 64, 96, 3))
    return backbone


def test_tiny_backbone_shapes_and_channels(tiny):
    images = np.random.default_rng(0).normal(size=(2, 64, 96, 3)).astype("float32")
    outputs = [np.asarray(c) for c in tiny(images)]
    assert tiny.output_channels == (16, 32, 64)  # 4, 8, 16 x base_width
    assert [c.shape for c in outputs] == [(2, 8, 12, 16), (2, 4, 6, 32), (2, 2, 3, 64)]
    assert [tuple(s) for s in tiny.compute_output_shape((2, 64, 96, 3))] == [c.shape for c in outputs]
    assert all(np.all(c >= 0) for c in outputs)  # each stage ends in a ReLU
    assert len(tiny.stages) == 5 and all(len(stage) == 3 for stage in tiny.stages)  # conv, GroupNorm, ReLU


def test_tiny_backbone_does_not_depend_on_how_a_batch_is_split(tiny):
    # GroupNorm normalises each image on its own: two images together give what each gives alone.
    images = np.random.default_rng(1).normal(size=(2, 64, 96, 3)).astype("float32")
    together = [np.asarray(c) for c in tiny(images)]
    for i in range(2):
        alone = [np.asarray(c) for c in tiny(images[i : i + 1])]
        for a, b in zip(alone, together):
            np.testing.assert_allclose(a[0], b[i], rtol=1e-5, atol=1e-5)


def test_tiny_backbone_config_round_trip(tiny):
    config = tiny.get_config()
    assert config["base_width"] == 4 and config["blocks_per_stage"] == 1
    clone = TinyBackbone.from_config(config)
    assert clone.get_config() == config
    clone.build((None, 64, 96, 3))
    clone.set_weights(tiny.get_weights())
    images = np.random.default_rng(2).normal(size=(1, 64, 96, 3)).astype("float32")
    for a, b in zip(tiny(images), clone(images)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
