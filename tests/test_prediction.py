"""keras_gfocal.prediction: a detector over image files, one record per image."""

import numpy as np
import pytest
from PIL import Image

from keras_gfocal import GFocalDetector
from keras_gfocal.export.runtime import KerasDetector
from keras_gfocal.prediction import predict_images


@pytest.fixture(scope="module")
def detector():
    # Threshold 0: an untrained head's scores all pass, so there are detections to record.
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny",
        num_classes=2,
        class_names=["ring", "star"],
        category_ids=[4, 9],
        image_size=(64, 64),
        score_threshold=0.0,
        max_detections=5,
        backbone_weights=None,
    )
    return KerasDetector(model)


def test_records_hold_what_detect_returns(detector, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3)).astype(np.uint8)
    path = str(tmp_path / "a.png")
    Image.fromarray(pixels).save(path)
    out = tmp_path / "pictures"
    out.mkdir()
    [record] = predict_images(detector, [path], score_threshold=0.0, out=str(out), progress=False)
    expected = detector.detect(pixels)
    assert record["file"] == path and record["picture"] == str(out / "a_pred.png")
    assert Image.open(record["picture"]).size == (56, 40)
    assert len(record["detections"]) == len(expected["labels"]) > 0
    for i, entry in enumerate(record["detections"]):
        label = int(expected["labels"][i])
        assert entry["label"] == label and entry["class_name"] == ["ring", "star"][label]
        assert entry["category_id"] == [4, 9][label]
        assert entry["score"] == round(float(expected["scores"][i]), 4)
        np.testing.assert_allclose(entry["box_xyxy"], expected["boxes"][i], atol=0.005)
        np.testing.assert_allclose(entry["edge_confidence_ltrb"], expected["edge_confidence"][i], atol=5e-5)


def test_an_unreadable_image_is_named_or_skipped(detector, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(ValueError, match=r"bad.jpg.*--skip-bad-images"):
        predict_images(detector, [str(bad)], progress=False)
    skipped = []
    assert predict_images(detector, [str(bad)], progress=False, skip_bad_images=True, skipped=skipped) == []
    assert [p for p, _ in skipped] == [str(bad)]
