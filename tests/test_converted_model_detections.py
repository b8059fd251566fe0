"""A model without a training canvas (what ``gfocal convert`` makes) detects the same
through every door: ``gfocal evaluate``, ``gfocal predict``, ``load_detector().detect``,
the SavedModel's ``serving_default`` and ``detect_bytes`` (as TF Serving calls them),
and the analysis, for a landscape and a portrait image.

The expected detections are computed here from the rule itself: the reference's test
resize of each image (short side <= short limit, long side <= long limit, whatever the
orientation, padded to its own multiple of 32), one eager forward pass, boxes divided
by the scale. The limits are shrunk to (64, 100) to keep the model small and fast; the
rule is the one applied at (800, 1333).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_gfocal import GFocalDetector
from keras_gfocal.analysis.collect import collect_positive_predictions, load_model
from keras_gfocal.cli import main
from keras_gfocal.data import CocoDataset, transforms
from keras_gfocal.export import export_model, load_detector
from keras_gfocal.image import MEAN, STD
from keras_gfocal.prediction import predict_images

TEST_SCALE = (64, 100)
#: (height, width) -> the canvas the rule gives, worked by hand:
#: 40 x 60: scale min(64 / 40, 100 / 60) = 1.6 -> 64 x 96, padded 64 x 96;
#: 60 x 36 (portrait): scale min(100 / 60, 64 / 36) = 5 / 3 -> 100 x 60, padded 128 x 64.
IMAGES = {1: ((40, 60), 1.6, (64, 96)), 2: ((60, 36), 5 / 3, (128, 64))}
CATEGORY_IDS = (3, 7)


def _reference_detections(model, image, scale, canvas_hw):
    """The rule written out: keep-ratio bilinear resize, normalise, zero padding, one forward pass."""
    h, w = image.shape[:2]
    new_hw = (int(np.floor(h * scale + 0.5)), int(np.floor(w * scale + 0.5)))
    resized = tf.image.resize(image.astype(np.float32), new_hw, method="bilinear", antialias=False).numpy()
    canvas = np.zeros((*canvas_hw, 3), np.float32)
    canvas[: new_hw[0], : new_hw[1]] = (resized - np.asarray(MEAN)) / np.asarray(STD)
    out = {k: np.asarray(v)[0] for k, v in model.predict_step(canvas[None]).items()}
    n = int(out["num_detections"])
    boxes = np.minimum(out["boxes"][:n] / np.float32(scale), [w, h, w, h])
    return {"boxes": boxes, "scores": out["scores"][:n], "labels": out["labels"][:n]}


def _assert_same(found, expected, what, box_atol=1e-3, score_atol=1e-6):
    """Same detections up to float noise, compared in score order."""
    order = np.argsort(-np.asarray(found["scores"]), kind="stable")
    got = {k: np.asarray(found[k])[order] for k in ("boxes", "scores", "labels")}
    assert len(got["scores"]) == len(expected["scores"]) > 0, what
    np.testing.assert_array_equal(got["labels"], expected["labels"], err_msg=what)
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-4, atol=score_atol, err_msg=what)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], rtol=1e-4, atol=box_atol, err_msg=what)


@pytest.fixture()
def converted_like(tmp_path, monkeypatch):
    """``(model path, COCO json, image folder, {image id: path}, {image id: expected detections})``."""
    monkeypatch.setattr(transforms, "REFERENCE_TEST_SCALE", TEST_SCALE)
    keras.utils.set_random_seed(0)
    # An untrained head scores ~0.005: a low threshold gives detections to compare.
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny", num_classes=2, category_ids=list(CATEGORY_IDS), score_threshold=0.001, max_detections=5
    )
    assert model.image_size is None  # as a converted model
    model.build((None, None, None, 3))
    path = str(tmp_path / "converted.keras")
    model.save(path)

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    files, expected, images, annotations = {}, {}, [], []
    for image_id, (hw, scale, canvas_hw) in IMAGES.items():
        image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        files[image_id] = str(folder / f"{image_id}.png")
        Image.fromarray(image).save(files[image_id])
        expected[image_id] = _reference_detections(model, image, scale, canvas_hw)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": hw[0], "width": hw[1]})
        # The detections themselves as ground truth: the analysis then keeps every one.
        for box, label in zip(expected[image_id]["boxes"], expected[image_id]["labels"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    ann = str(tmp_path / "instances.json")
    with open(ann, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path, ann, str(folder), files, expected


def test_a_model_without_canvas_detects_the_same_through_every_door(converted_like, tmp_path):
    path, ann, folder, files, expected = converted_like
    by_file = {files[i]: i for i in files}

    # gfocal evaluate (the batched tf.data path), its COCO results.
    results_json = str(tmp_path / "results.json")
    assert main(["evaluate", "--model", path, "--ann", ann, "--images", folder, "--results-json", results_json]) == 0
    results = json.load(open(results_json))
    for image_id in IMAGES:
        rows = [r for r in results if r["image_id"] == image_id]
        _assert_same(
            {
                "boxes": [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rows)],
                "scores": [r["score"] for r in rows],
                "labels": [CATEGORY_IDS.index(r["category_id"]) for r in rows],
            },
            expected[image_id],
            f"gfocal evaluate, image {image_id}",
        )

    # gfocal predict (its JSON rounds boxes to 0.01 px and scores to 1e-4).
    out = str(tmp_path / "predicted")
    assert main(["predict", *files.values(), "--model", path, "--out", out]) == 0
    for entry in json.load(open(os.path.join(out, "predictions.json"))):
        rows = entry["detections"]
        _assert_same(
            {
                "boxes": [r["box_xyxy"] for r in rows],
                "scores": [r["score"] for r in rows],
                "labels": [r["label"] for r in rows],
            },
            expected[by_file[entry["file"]]],
            f"gfocal predict, {entry['file']}",
            box_atol=0.006,
            score_atol=6e-5,
        )

    # load_detector on the .keras file, and predict_images over the SavedModel.
    keras_detector = load_detector(path)
    assert keras_detector.image_size is None and keras_detector.test_scale == TEST_SCALE
    for image_id, file in files.items():
        image = np.asarray(Image.open(file))
        _assert_same(keras_detector.detect(image), expected[image_id], f"load_detector(.keras), image {image_id}")

    # The SavedModel, called as TF Serving calls it.
    model, _ = load_model(path)
    saved = export_model(model, "saved_model", str(tmp_path / "exports"))
    signatures = tf.saved_model.load(saved).signatures
    for image_id, file in files.items():
        image = np.asarray(Image.open(file))
        with open(file, "rb") as f:
            encoded = f.read()
        for name, outputs in (
            ("serving_default", signatures["serving_default"](images=tf.constant(image[None]))),
            ("detect_bytes", signatures["detect_bytes"](image_bytes=tf.constant([encoded]))),
        ):
            out = {k: v.numpy()[0] for k, v in outputs.items()}
            n = int(out["num_detections"])
            np.testing.assert_array_equal(out["category_ids"][:n], np.asarray(CATEGORY_IDS)[out["labels"][:n]])
            _assert_same({k: out[k][:n] for k in ("boxes", "scores", "labels")}, expected[image_id], name)
    metadata = json.load(open(os.path.join(saved, "gfocal_metadata.json")))
    assert metadata["image_size"] is None and metadata["test_scale"] == list(TEST_SCALE)
    served = {r["file"]: r["detections"] for r in predict_images(load_detector(saved), list(files.values()))}
    for file, rows in served.items():
        _assert_same(
            {
                "boxes": [r["box_xyxy"] for r in rows],
                "scores": [r["score"] for r in rows],
                "labels": [r["label"] for r in rows],
            },
            expected[by_file[file]],
            f"load_detector(SavedModel), {file}",
            box_atol=0.006,
            score_atol=6e-5,
        )

    # The analysis: every detection is positive (the ground truth is the detections).
    positives = collect_positive_predictions(model, CocoDataset(ann, folder), batch_size=1)
    assert positives["image_size"] is None and positives["test_scale"] == TEST_SCALE
    assert positives["num_detections"] == sum(len(e["scores"]) for e in expected.values())
    for image_id in IMAGES:
        rows = positives["image_ids"] == image_id
        _assert_same(
            {
                "boxes": positives["boxes"][rows] / positives["scales"][rows, None],
                "scores": positives["joint_score"][rows],
                "labels": positives["labels"][rows],
            },
            expected[image_id],
            f"analysis, image {image_id}",
        )
        np.testing.assert_allclose(positives["iou"][rows], 1.0, atol=1e-4)
