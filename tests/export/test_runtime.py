"""One vocabulary: ``predict()``, every export and ``load_detector().detect`` name
the detections alike (``keras_gfocal.postprocess.DETECTION_KEYS``)."""

import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.data import CocoDataset
from keras_gfocal.export import load_detector, read_metadata
from keras_gfocal.export.runtime import IMAGE_DETECTION_KEYS, KerasDetector
from keras_gfocal.postprocess import DETECTION_KEYS

CATEGORY_IDS = [3, 7, 11]  # non-contiguous, so a label and its id differ


@pytest.fixture(scope="module")
def untrained():
    # Threshold 0: an untrained head's scores (about 0.005) all pass, so every
    # class appears among the detections.
    return GFocalDetector.from_preset(
        "gfocal_v2_tiny",
        num_classes=3,
        class_names=["a", "b", "c"],
        category_ids=CATEGORY_IDS,
        image_size=(64, 64),
        score_threshold=0.0,
        max_detections=20,
        backbone_weights=None,
    )


def test_vocabulary_names_each_key_once():
    assert len(set(DETECTION_KEYS)) == len(DETECTION_KEYS)
    assert IMAGE_DETECTION_KEYS == ("boxes", "scores", "labels", "category_ids", "edge_confidence")


def test_predict_returns_labels_and_their_category_ids(untrained):
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    pred = untrained.predict(images, verbose=0)
    assert set(pred) == set(DETECTION_KEYS)
    for i in range(2):
        n = int(pred["num_detections"][i])
        labels = pred["labels"][i]
        assert n > 0 and set(labels[:n].tolist()) <= {0, 1, 2} and np.all(labels[n:] == -1)
        expected = [CATEGORY_IDS[int(label)] for label in labels[:n]] + [-1] * (len(labels) - n)
        np.testing.assert_array_equal(pred["category_ids"][i], expected)


def test_predict_pads_labels_and_category_ids_with_minus_one():
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny", num_classes=2, category_ids=[5, 9], score_threshold=0.9, backbone_weights=None
    )
    pred = model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
    assert int(pred["num_detections"][0]) == 0  # untrained scores are far below 0.9
    np.testing.assert_array_equal(pred["labels"][0], -1)
    np.testing.assert_array_equal(pred["category_ids"][0], -1)


def test_without_category_ids_the_ids_are_the_labels():
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny", num_classes=2, score_threshold=0.0, max_detections=10, backbone_weights=None
    )
    pred = model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
    np.testing.assert_array_equal(pred["category_ids"], pred["labels"])


def test_keras_detector_detect_uses_the_same_names(untrained):
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3)).astype(np.uint8)
    det = KerasDetector(untrained).detect(image)
    assert tuple(det) == IMAGE_DETECTION_KEYS
    np.testing.assert_array_equal(det["category_ids"], np.array(CATEGORY_IDS)[det["labels"]])


def test_exports_name_their_outputs_as_predict_does(exports, trained, synthetic):
    # The session's trained model and its exports (tests/export/conftest.py), built once for every export test.
    import tensorflow as tf

    from keras_gfocal.image import read_image

    model, _ = trained
    val = CocoDataset(synthetic["val_ann_file"], synthetic["val_image_dir"])
    image = read_image(val.image_path(val.image_ids[0]))
    expected = KerasDetector(model).detect(image)
    ids = np.array(model.category_ids)
    assert len(expected["labels"]) > 0 and set(ids) != set(range(len(ids)))  # ids and labels differ
    np.testing.assert_array_equal(expected["category_ids"], ids[expected["labels"]])

    raw = tf.saved_model.load(exports["saved_model"]).signatures["serving_default"](images=tf.constant(image[None]))
    # ``classes``: the 0.1 name of the category ids, a deprecated alias for one release.
    assert set(raw) == set(DETECTION_KEYS) | {"classes"}
    np.testing.assert_array_equal(raw["classes"].numpy(), raw["category_ids"].numpy())
    # A TFLite file's outputs are output_0, output_1, ... in sorted name order.
    assert read_metadata(exports["tflite_float32"])["outputs"] == sorted(DETECTION_KEYS)
    assert read_metadata(exports["tflite_float32_nonms"])["outputs"] == ["cls_scores", "reg_logits"]

    for name in ("saved_model", "tflite_float32", "tflite_float32_nonms", "onnx"):
        meanings = read_metadata(exports[name])["detections"]
        assert list(meanings) == list(DETECTION_KEYS), name
        assert meanings["labels"].startswith("contiguous 0-based class index")
        assert meanings["category_ids"].startswith("the dataset's category id")
        det = load_detector(exports[name]).detect(image)
        assert tuple(det) == IMAGE_DETECTION_KEYS, name
        # Each format's ids follow from its own labels; its best detection is Keras's best.
        np.testing.assert_array_equal(det["category_ids"], ids[det["labels"]], err_msg=name)
        assert (det["labels"][0], det["category_ids"][0]) == (expected["labels"][0], expected["category_ids"][0])
        np.testing.assert_allclose(det["boxes"][0], expected["boxes"][0], atol=1.0, err_msg=name)
