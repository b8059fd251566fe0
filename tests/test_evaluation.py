"""COCO evaluation: result conversion and pycocotools scoring on hand-made data."""

import json

import numpy as np
from pycocotools.coco import COCO

from keras_gfocal.evaluation import COCO_METRIC_NAMES, coco_evaluate, detections_to_coco


def _gt(tmp_path):
    data = {
        "images": [
            {"id": 10, "file_name": "a.jpg", "height": 100, "width": 200},
            {"id": 11, "file_name": "b.jpg", "height": 100, "width": 200},
        ],
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
        "labels": np.array([[1, -1]], "int32"),
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
        "boxes": np.array([[[-10, 50, 500, 300]]], "float32"),
        "scores": np.array([[0.5]], "float32"),
        "labels": np.array([[0]], "int32"),
        "num_detections": np.array([1], "int32"),
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


# ---------------------------------------------------------------------------
# The reference's test-time resize for a model without a training canvas
# ---------------------------------------------------------------------------


def _varied_coco(tmp_path):
    """Four images of different sizes and orientations, one box each."""
    from PIL import Image

    sizes = {1: (40, 60), 2: (30, 20), 3: (16, 16), 4: (24, 32)}
    images, annotations = [], []
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for image_id, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": 3,
                "bbox": [2, 2, w / 2, h / 2],
                "area": w * h / 4,
                "iscrowd": 0,
            }
        )
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "triangle"}],
            }
        )
    )
    return str(ann), str(tmp_path / "img"), sizes


def test_reference_test_resize_end_to_end_without_endless_retracing(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    from keras_gfocal import GFocalDetector
    from keras_gfocal.data import CocoDataset, decode_image, transforms
    from keras_gfocal.evaluation import make_eval_dataset, predict_coco
    from keras_gfocal.export.runtime import KerasDetector

    # Small limits (short 64, long 100) keep the test fast; the rule is the reference's.
    monkeypatch.setattr(transforms, "REFERENCE_TEST_SCALE", (64, 100))
    ann, image_dir, sizes = _varied_coco(tmp_path)
    dataset = CocoDataset(ann, image_dir)
    keras.utils.set_random_seed(0)
    # No image_size: a model converted from a reference checkpoint, say. An untrained
    # head scores ~0.005, so a low threshold gives detections to compare.
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, score_threshold=0.001, max_detections=5)
    assert model.image_size is None
    model.build((None, None, None, 3))
    shapes = []
    predict_on_batch = model.predict_on_batch

    def recording(images):
        shapes.append(tuple(images.shape))
        return predict_on_batch(images)

    monkeypatch.setattr(model, "predict_on_batch", recording)
    results = predict_coco(model, dataset, batch_size=1, progress=False)
    # Each image at its own padded size: (40, 60) -> 64 x 96; portrait (30, 20) -> 96 x 64;
    # (16, 16) -> 64 x 64; (24, 32) -> 64 x 85, padded 64 x 96.
    assert shapes == [(1, 64, 96, 3), (1, 96, 64, 3), (1, 64, 64, 3), (1, 64, 96, 3)]
    assert {r["image_id"] for r in results} == set(sizes) and 4 <= len(results) <= 4 * 5
    for r in results:
        h, w = sizes[r["image_id"]]
        x, y, bw, bh = r["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
    # One relaxed trace serves every size: more sizes, no more tracing.
    traces = model.predict_function.experimental_get_tracing_count()
    for size in ((32, 128), (128, 32), (96, 96)):
        predict_on_batch(np.zeros((1, *size, 3), np.float32))
    # A static trace, then one relaxed to [1, None, None, 3].
    assert model.predict_function.experimental_get_tracing_count() == traces <= 2

    # The relaxed (dynamic-shape) graph detects exactly what the eager, static-shape
    # forward pass does, and `gfocal predict`'s Keras path resizes the same way.
    detector = KerasDetector(model)
    assert detector.image_size is None and detector.test_scale == (64, 100)
    image = decode_image(tf.io.read_file(dataset.image_path(2))).numpy()
    canvas, scale = transforms.preprocess_image(image, test_scale=(64, 100))
    eager = {k: np.asarray(v) for k, v in model.predict_step(canvas[None]).items()}
    n = int(eager["num_detections"][0])
    det = detector.detect(image)
    np.testing.assert_allclose(det["boxes"], eager["boxes"][0, :n] / float(scale), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(det["scores"], eager["scores"][0, :n], rtol=1e-4)
    assert shapes[-1] == (1, 96, 64, 3)
    # A model with a training canvas keeps the fixed canvas.
    fixed = make_eval_dataset(
        GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=2, image_size=(64, 64)), dataset, batch_size=2
    )
    assert fixed.element_spec[0].shape.as_list() == [None, 64, 64, 3]
