"""COCO evaluation: result conversion and pycocotools scoring on hand-made data."""

import json

import numpy as np
from pycocotools.coco import COCO

from keras_gfocal.evaluation import COCO_METRIC_NAMES, coco_evaluate, detections_to_coco


def _gt(tmp_path):
    data = {
        "images": [{"id": 10, "file_name": "a.jpg", "height": 100, "width": 200},
                   {"id": 11, "file_name": "b.jpg", "height": 100, "width": 200}],
        "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "triangle"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 7, "bbox": [50, 10, 60, 50], "area": 3000, "iscrowd": 0},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return COCO(str(path))


def test_detections_map_back_to_original_pixels_and_dataset_ids():
    detections = {
        "boxes": np.array([[[20, 40, 80, 120], [0, 0, 0, 0]]], "float32"),
        "scores": np.array([[0.9, 0.0]], "float32"),
        "classes": np.array([[1, -1]], "int32"),
        "num_detections": np.array([1], "int32"),
    }
    meta = {"image_id": np.array([10]), "scale": np.array([2.0], "float32"), "original_size": np.array([[100, 200]])}
    results = detections_to_coco(detections, meta, [3, 7])
    assert len(results) == 1
    assert results[0]["image_id"] == 10 and results[0]["category_id"] == 7
    np.testing.assert_allclose(results[0]["bbox"], [10, 20, 30, 40])
    np.testing.assert_allclose(results[0]["score"], 0.9, rtol=1e-6)


def test_boxes_are_clipped_to_the_original_image():
    detections = {
        "boxes": np.array([[[-10, 50, 500, 300]]], "float32"), "scores": np.array([[0.5]], "float32"),
        "classes": np.array([[0]], "int32"), "num_detections": np.array([1], "int32"),
    }
    meta = {"image_id": np.array([11]), "scale": np.array([1.0], "float32"), "original_size": np.array([[100, 200]])}
    (result,) = detections_to_coco(detections, meta, [3, 7])
    np.testing.assert_allclose(result["bbox"], [0, 50, 200, 50])


def test_perfect_detections_score_one_and_per_class_ap(tmp_path):
    gt = _gt(tmp_path)
    results = [
        {"image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 40], "score": 0.9},
        {"image_id": 11, "category_id": 7, "bbox": [50, 10, 60, 50], "score": 0.8},
    ]
    stats = coco_evaluate(gt, results, verbose=False)
    assert set(COCO_METRIC_NAMES) <= set(stats)
    np.testing.assert_allclose(stats["AP"], 1.0)
    np.testing.assert_allclose(stats["AP50"], 1.0)
    assert set(stats["per_class_AP"]) == {"square", "triangle"}
    np.testing.assert_allclose(list(stats["per_class_AP"].values()), [1.0, 1.0])


def test_wrong_class_and_missing_detections(tmp_path):
    gt = _gt(tmp_path)
    # The square is found; the triangle is reported as a square, so triangle AP is 0.
    results = [
        {"image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 40], "score": 0.9},
        {"image_id": 11, "category_id": 3, "bbox": [50, 10, 60, 50], "score": 0.8},
    ]
    stats = coco_evaluate(gt, results, verbose=False)
    assert stats["per_class_AP"]["triangle"] == 0.0
    # square: one true positive ranked first, one false positive after it -> AP 1.
    np.testing.assert_allclose(stats["per_class_AP"]["square"], 1.0)
    np.testing.assert_allclose(stats["AP"], 0.5)


def test_no_detections_give_zero(tmp_path):
    stats = coco_evaluate(_gt(tmp_path), [], verbose=False)
    assert stats["AP"] == 0.0 and stats["per_class_AP"] == {"square": 0.0, "triangle": 0.0}
