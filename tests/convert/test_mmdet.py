"""The MMDetection GFocal map: what it refuses before building anything, how it counts
classes, and the class names a converted model takes from the checkpoint's ``meta``."""

import json

import numpy as np
import pytest
from hostile_files import constant_checkpoint, dictionary, text, tup
from reference_weights import load_fixture

from keras_gfocal import GFocalDetector
from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.convert import convert_checkpoint
from keras_gfocal.convert.mmdet import classes_in_checkpoint, gfocal_rows


def _gfl_cls(channels):
    return {"bbox_head.gfl_cls.bias": np.zeros(channels, np.float32)}


def test_a_checkpoint_without_a_gfocal_head_is_named_as_such():
    torchvision_resnet = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.bias": np.zeros(1000, np.float32)}
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^the given state dict has no bbox_head\.gfl_cls\.bias: it is not an MMDetection GFocal checkpoint\.$",
    ):
        convert_checkpoint(torchvision_resnet, "gfocal_v2_tiny")


def test_a_class_count_that_does_not_fit_the_head_is_refused():
    # 5 channels fit 5 classes, or 4 and a background channel; never 3.
    with pytest.raises(
        CheckpointMismatchError, match=r"bbox_head\.gfl_cls\.bias has 5 classes, which does not fit num_classes=3\.$"
    ):
        convert_checkpoint(_gfl_cls(5), "gfocal_v2_tiny", num_classes=3)


@pytest.mark.parametrize(
    "channels, dgqp, asked, expected",
    [
        (81, True, None, (80, True)),  # official GFocalV2: 80 classes and a background channel
        (80, False, None, (80, False)),  # MMDetection's GFLV1: no background channel
        (81, False, 80, (80, True)),  # asked for 80: the 81st channel is the background
        (80, True, 80, (80, False)),  # a V2 head trained without the background channel
        (1, False, None, (1, False)),
    ],
)
def test_the_class_count_and_background_channel_read_off_gfl_cls(channels, dgqp, asked, expected):
    assert classes_in_checkpoint(_gfl_cls(channels), "x.pth", dgqp, asked) == expected


def test_the_map_names_what_it_cannot_read():
    tiny = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    tiny.build((None, 64, 64, 3))
    with pytest.raises(
        ValueError, match=r"onto this model.s backbone: TinyBackbone has no pretrained-weight converter"
    ):
        gfocal_rows(tiny)
    with pytest.raises(TypeError, match="reads a GFocalDetector, got TinyBackbone"):
        gfocal_rows(tiny.backbone)


def _three_class_v1_checkpoint(tmp_path, class_names):
    """A ``.pth`` file of MMDetection's GFL R50 with a 3-class head and ``meta["CLASSES"]``."""
    shapes = json.loads(str(load_fixture("gfocal_v1_r50_reference.npz")["shapes"]))
    shapes = [(key, [3] + shape[1:] if key.startswith("bbox_head.gfl_cls.") else shape) for key, shape in shapes]
    meta = dictionary([("CLASSES", tup(*map(text, class_names)))])
    path = tmp_path / "gfl_3_classes.pth"
    path.write_bytes(constant_checkpoint(shapes, meta)[0])
    return path


@pytest.mark.parametrize(
    "meta_names, class_names, category_ids",
    [(("cat", "dog", "fox"), ["cat", "dog", "fox"], [1, 2, 3]), (("cat", "dog"), None, None)],
    ids=["three names", "names that do not fit"],
)
def test_class_names_come_from_meta_classes_when_they_fit(tmp_path, meta_names, class_names, category_ids):
    model = convert_checkpoint(_three_class_v1_checkpoint(tmp_path, meta_names), "gfocal_v1_r50_fpn")
    assert model.num_classes == 3
    assert model.class_names == class_names and model.category_ids == category_ids
