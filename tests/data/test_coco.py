"""CocoDataset: parsing rules, category mapping and validation errors."""

import logging
import os

import numpy as np
import pytest

from keras_gfocal.data.coco import CocoDataset


def test_category_mapping_both_ways(coco):
    assert coco.num_classes == 3
    assert coco.category_ids == [1, 3, 7]
    assert coco.class_names == ["circle", "square", "triangle"]
    assert coco.category_id_to_label == {1: 0, 3: 1, 7: 2}
    assert coco.label_to_category_id == {0: 1, 1: 3, 2: 7}
    for label in range(3):
        assert coco.category_id_to_label[coco.label_to_category_id[label]] == label


def test_boxes_labels_crowd_clip_and_degenerate(coco, h):
    assert coco.image_ids == [1, 2, 3, 5, 9]
    for image_id in coco.image_ids:
        entry = coco.get(image_id)
        assert entry["boxes"].dtype == np.float32
        assert entry["labels"].dtype == np.int32
        np.testing.assert_array_equal(entry["boxes"], np.asarray(h.EXPECTED_BOXES[image_id], np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(entry["labels"], h.EXPECTED_LABELS[image_id])
        assert (entry["height"], entry["width"]) == h.SIZES[image_id]
    # 2 crowd annotations and 2 degenerate boxes were left out.
    assert coco.num_crowd == 2
    assert coco.num_invalid_boxes == 2
    assert coco.num_skipped == 0


def test_empty_images_kept_for_eval_skipped_for_training(coco):
    assert 5 in coco.image_ids
    assert coco.image_ids_with_boxes == [1, 2, 3, 9]
    train_ids = [int(r["image_id"]) for r in coco.records(skip_empty=True)]
    eval_ids = [int(r["image_id"]) for r in coco.records(skip_empty=False)]
    assert train_ids == [1, 2, 3, 9]
    assert eval_ids == [1, 2, 3, 5, 9]


def test_records_content(coco, coco_dir, h):
    records = {int(r["image_id"]): r for r in coco.records()}
    rec = records[9]
    assert rec["image_path"].numpy().decode() == os.path.join(coco_dir["image_dir"], "sub/d.jpg")
    np.testing.assert_array_equal(rec["boxes"].numpy(), h.EXPECTED_BOXES[9])
    np.testing.assert_array_equal(rec["labels"].numpy(), h.EXPECTED_LABELS[9])
    np.testing.assert_array_equal(rec["original_size"].numpy(), [24, 32])
    assert records[5]["boxes"].shape == (0, 4)


def test_pycocotools_view(coco):
    assert sorted(coco.coco.getCatIds()) == [1, 3, 7]
    assert len(coco.coco.getAnnIds(imgIds=[1])) == 6


def _bad_folder(h, tmp_path, file_names, write=()):
    """A COCO folder whose images are ``file_names``; only those in ``write`` exist."""
    image_dir = tmp_path / "imgs"
    os.makedirs(image_dir, exist_ok=True)
    images = []
    for i, name in enumerate(file_names, start=1):
        images.append({"id": i, "file_name": name, "height": 8, "width": 10})
        if name in write:
            h.save_rgb(str(image_dir / name), np.zeros([8, 10, 3]))
    annotations = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0}
        for i in range(1, len(file_names) + 1)
    ]
    ann_file = h.write_json(str(tmp_path / "ann.json"), images, annotations)
    return ann_file, str(image_dir)


def test_missing_image_raises_naming_file(tmp_path, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png", "gone.png"], write=["ok.png"])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        CocoDataset(ann_file, image_dir)


def test_corrupt_image_raises_naming_file(tmp_path, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png", "broken.png"], write=["ok.png"])
    with open(os.path.join(image_dir, "broken.png"), "wb") as f:
        f.write(b"this is not a png file at all")
    with pytest.raises(ValueError, match="broken.png"):
        CocoDataset(ann_file, image_dir)


def test_bad_images_skipped_with_warning_and_count(tmp_path, caplog, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png", "gone.png", "broken.png"], write=["ok.png"])
    with open(os.path.join(image_dir, "broken.png"), "wb") as f:
        f.write(b"\x89PNG garbage")
    with caplog.at_level(logging.WARNING, logger="keras_gfocal.data.coco"):
        ds = CocoDataset(ann_file, image_dir, skip_bad_images=True)
    assert ds.num_skipped == 2
    assert ds.image_ids == [1]
    assert [name for name, _ in ds.skipped] == ["gone.png", "broken.png"]
    assert "missing" in ds.skipped[0][1] and "corrupt" in ds.skipped[1][1]
    text = caplog.text
    assert "gone.png" in text and "broken.png" in text
    assert "Skipped 2 bad image(s) of 3" in text
    # The annotations of skipped images are ignored, the remaining image keeps its box.
    np.testing.assert_array_equal(ds.get(1)["boxes"], [[1, 1, 5, 5]])


def test_truncated_image_caught_by_decode_mode(tmp_path, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png", "cut.png"], write=["ok.png"])
    noise = np.random.default_rng(0).integers(0, 255, [8, 10, 3])
    h.save_rgb(os.path.join(image_dir, "cut.png"), noise)
    path = os.path.join(image_dir, "cut.png")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    # The header is intact, so the default check passes ...
    assert CocoDataset(ann_file, image_dir).image_ids == [1, 2]
    # ... and a full decode catches it.
    with pytest.raises(ValueError, match="cut.png"):
        CocoDataset(ann_file, image_dir, verify_images="decode")
    ds = CocoDataset(ann_file, image_dir, verify_images="decode", skip_bad_images=True)
    assert ds.image_ids == [1] and ds.num_skipped == 1


def test_size_mismatch_is_an_error(tmp_path, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png", "big.png"], write=["ok.png"])
    h.save_rgb(os.path.join(image_dir, "big.png"), np.zeros([9, 10, 3]))
    with pytest.raises(ValueError, match=r"big.png.*10x9"):
        CocoDataset(ann_file, image_dir)


@pytest.mark.parametrize("name", ["../escape.png", "sub/../../escape.png", "/etc/escape.png"])
def test_file_name_outside_folder_raises(tmp_path, name, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png", name], write=["ok.png"])
    with pytest.raises(ValueError, match="escape.png") as info:
        CocoDataset(ann_file, image_dir, skip_bad_images=True)
    assert "leaves the image folder" in str(info.value)


def test_missing_size_read_from_header(tmp_path, h):
    image_dir = tmp_path / "imgs"
    h.save_rgb(str(image_dir / "x.png"), np.zeros([12, 7, 3]))
    ann_file = h.write_json(
        str(tmp_path / "a.json"),
        [{"id": 4, "file_name": "x.png"}],
        [{"id": 1, "image_id": 4, "category_id": 3, "bbox": [2, 2, 10, 20], "iscrowd": 0}],
    )
    ds = CocoDataset(ann_file, str(image_dir), verify_images="none")
    entry = ds.get(4)
    assert (entry["height"], entry["width"]) == (12, 7)
    np.testing.assert_array_equal(entry["boxes"], [[2, 2, 7, 12]])


def test_unknown_category_raises(tmp_path, h):
    ann_file, image_dir = _bad_folder(h, tmp_path, ["ok.png"], write=["ok.png"])
    h.write_json(
        ann_file,
        [{"id": 1, "file_name": "ok.png", "height": 8, "width": 10}],
        [{"id": 77, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2], "iscrowd": 0}],
    )
    with pytest.raises(ValueError, match=r"annotation 77 \(image 1, ok.png\) has unknown category id 99"):
        CocoDataset(ann_file, image_dir)
