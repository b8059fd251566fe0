"""GFocalDetector.decode's point indices and score threshold, and localization_quality, against the
NumPy reference (tests/numpy_reference.py)."""

import numpy as np
import numpy_reference as ref
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.postprocess import DETECTION_KEYS


def test_decode_point_indices_name_each_detections_point():
    # The box decoded (NumPy reference) from the raw outputs at the returned point index is the
    # detection's box; the score and the edge confidence are that point's too (threshold 0.0
    # given as decode's argument).
    # pre_nms_top_k 20 cuts the first level (96 points): a candidate's row is not its point's
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, pre_nms_top_k=20)
    images = np.zeros((2, 64, 96, 3), np.float32)  # decode reads only the shape
    points, strides, _ = ref.make_points(64, 96)
    # Raw outputs of spread-out boxes, so that many detections survive NMS, from every level.
    rng = np.random.default_rng(3)
    outputs = {
        "cls_scores": (rng.uniform(size=(2, len(points), 3)) ** 3).astype(np.float32),
        "reg_logits": rng.normal(0.0, 3.0, size=(2, len(points), 68)).astype(np.float32),
    }
    assert set(model.decode(images, outputs)) == set(DETECTION_KEYS)
    det = {k: np.asarray(v) for k, v in model.decode(images, outputs, 0.0, return_point_indices=True).items()}
    assert set(det) == set(DETECTION_KEYS) | {"point_indices"}
    reg = np.asarray(outputs["reg_logits"], np.float64)
    cls_scores = np.asarray(outputs["cls_scores"])
    for b in range(2):
        n = int(det["num_detections"][b])
        assert n > 10
        index = det["point_indices"][b, :n]
        np.testing.assert_array_equal(det["point_indices"][b, n:], -1)
        expected = ref.decode_boxes(points, strides, reg[b], (64, 96))[0]
        np.testing.assert_allclose(det["boxes"][b, :n], expected[index], atol=1e-3)
        np.testing.assert_array_equal(det["scores"][b, :n], cls_scores[b, index, det["labels"][b, :n]])
        top1 = ref.softmax(reg[b, index].reshape(n, 4, 17)).max(-1)
        np.testing.assert_allclose(det["edge_confidence"][b, :n], top1, rtol=1e-5)
    # the threshold argument replaces the model's
    high = {k: np.asarray(v) for k, v in model.decode(images, outputs, score_threshold=0.5).items()}
    assert np.all(high["num_detections"] < det["num_detections"])
    assert all(np.all(high["scores"][b, : high["num_detections"][b]] > 0.5) for b in range(2))
    # detections from several levels, so the level offsets count
    assert len(np.unique(strides[det["point_indices"][det["point_indices"] >= 0]])) > 1


def test_localization_quality_is_the_dgqp_of_the_rows_and_v1_has_none():
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2)
    model.build((1, 64, 64, 3))
    reg = np.random.default_rng(4).normal(0.0, 3.0, size=(5, 68)).astype(np.float32)
    dgqp = model.head.quality
    expected = ref.dgqp(reg, dgqp.hidden.kernel, dgqp.hidden.bias, dgqp.out.kernel, dgqp.out.bias)
    got = np.asarray(model.localization_quality(reg))
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="GFocalV2"):
        GFocalDetector.from_preset("gfocal_v1_tiny", num_classes=2).localization_quality(reg)
