"""keras_gfocal.analysis.figures: the PNGs and what they refuse."""

import numpy as np
import pytest

from keras_gfocal.analysis.figures import distribution_figure, quality_vs_iou_figure


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_distribution_figure_of_one_prediction(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    logits = np.zeros((4, 17))
    logits[:, 3] = 5.0  # a sharp distribution at bin 3 on every edge
    path = distribution_figure(
        image,
        [10, 10, 30, 30],
        logits,
        str(tmp_path / "d.png"),
        gt_boxes=[[12, 8, 30, 32]],
        points=[[20, 20]],
        strides=[4],
        captions=["one"],
        title="t",
    )
    assert path == str(tmp_path / "d.png") and _is_png(path)


def test_distribution_figure_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match="at least one prediction"):
        distribution_figure(np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4)), np.zeros((0, 68)), str(tmp_path / "x"))
    with pytest.raises(ValueError, match="got 2 images for 1 boxes"):
        distribution_figure([np.zeros((8, 8, 3), np.uint8)] * 2, [0, 0, 4, 4], np.zeros(68), str(tmp_path / "x"))


def test_quality_vs_iou_figure_of_a_v1_model(tmp_path):
    rng = np.random.default_rng(0)
    iou = rng.uniform(0.1, 1.0, 20)
    results = {
        "iou": iou,
        "quality": None,
        "dgqp": False,
        "cls_score": iou,
        "joint_score": iou,
        "edge_top1": rng.uniform(0, 1, (20, 4)),
    }
    assert _is_png(quality_vs_iou_figure(results, str(tmp_path / "q.png"), title="v1"))
