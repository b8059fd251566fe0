"""Bad input to the data readers: every broken annotation and image gets an answer that names it."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_gfocal.data import (
    CocoDataset,
    make_dataset,
    make_synthetic_coco,
    read_image,
    read_tfrecords,
    write_tfrecords,
)


def _folder(tmp_path, annotations, images=None, sizes=None):
    """One 20 x 30 PNG ("a.png", id 1) per entry of ``images``, and a raw JSON text (NaN allowed)."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    images = images or [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    for image in images:
        if not (image_dir / image["file_name"]).exists():
            Image.fromarray(np.full([image["height"], image["width"], 3], 90, np.uint8)).save(
                str(image_dir / image["file_name"])
            )
    text = json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(text)
    return str(ann_file), str(image_dir)


def _ann(ann_id, bbox, image_id=1, category_id=1):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0}


@pytest.mark.parametrize(
    "bbox, message",
    [
        ([float("nan"), 10, 20, 20], r"bbox \[nan, 10, 20, 20\] holds a non-finite number \(NaN or infinity\)"),
        ([10, 10, float("inf"), 5], r"bbox \[10, 10, inf, 5\] holds a non-finite number"),
        ([None, 10, 20, 20], r"bbox \[None, 10, 20, 20\] must hold four numbers \[x, y, w, h\]"),
        ([10, 10, "wide", 20], r"bbox \[10, 10, 'wide', 20\] must hold four numbers"),
        ([10, True, 3, 3], r"bbox \[10, True, 3, 3\] must hold four numbers"),
        ([10, 10, 20], r"has no \[x, y, w, h\] bbox: got \[10, 10, 20\]"),
        (None, r"has no \[x, y, w, h\] bbox: got None"),
    ],
)
def test_broken_bbox_names_file_annotation_and_image(tmp_path, bbox, message):
    # NaN and Infinity are what Python's json writes for float nan / inf (and reads back).
    ann_file, image_dir = _folder(tmp_path, [_ann(4, [1, 1, 5, 5]), _ann(57, bbox)])
    with pytest.raises(ValueError) as info:
        CocoDataset(ann_file, image_dir)
    text = str(info.value)
    assert text.startswith(f"{ann_file}: annotation 57 (image 1, a.png)"), text
    assert re.search(message, text), text


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("image_id", None, r"annotation 8: 'image_id' must be an integer, got None"),
        ("image_id", "1", r"annotation 8: 'image_id' must be an integer, got '1'"),
        ("category_id", 1.5, r"annotation 8 \(image 1, a.png\): 'category_id' must be an integer, got 1.5"),
    ],
)
def test_wrong_types_of_ids_are_named(tmp_path, field, value, message):
    ann = _ann(8, [1, 1, 5, 5])
    ann[field] = value
    ann_file, image_dir = _folder(tmp_path, [ann])
    with pytest.raises(ValueError, match=message):
        CocoDataset(ann_file, image_dir)


def test_bad_image_entries_are_named(tmp_path):
    ann_file, image_dir = _folder(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "height": 20, "width": 30}])
    data = json.load(open(ann_file))
    data["images"][0]["width"] = "thirty"
    open(ann_file, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match=r"image 1 \(a.png\) 'width' must be an integer, got 'thirty'"):
        CocoDataset(ann_file, image_dir)
    data["images"][0]["width"] = -30
    open(ann_file, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match=r"image 1 \(a.png\) has width -30; sizes must be >= 1"):
        CocoDataset(ann_file, image_dir)


def test_dropped_boxes_are_counted_by_reason_and_summarised(tmp_path, caplog):
    annotations = [
        _ann(1, [1, 1, 5, 5]),
        _ann(2, [1, 1, 0, 5]),  # zero width
        _ann(3, [1, 1, -4, 5]),  # negative width
        _ann(4, [40, 1, 5, 5]),  # right of the 30-pixel-wide image
        dict(_ann(5, [0, 0, 30, 20]), iscrowd=1),
    ]
    ann_file, image_dir = _folder(tmp_path, annotations)
    with caplog.at_level("WARNING", logger="keras_gfocal.data.coco"):
        ds = CocoDataset(ann_file, image_dir)
    assert ds.dropped == {"crowd": 1, "small": 2, "outside": 1}
    assert ds.summary() == [
        f"{ann_file}: 1 images (1 with boxes), 1 training boxes, 1 classes",
        "  left out: 1 crowd annotations (iscrowd=1)",
        "  left out: 2 boxes narrower or lower than 1 pixel (width or height < 1, or negative)",
        "  left out: 1 boxes outside the image (less than 1 pixel left after clipping)",
    ]
    assert "left out: 1 boxes outside the image" in caplog.text  # logged too, not only returned


def _cut(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def test_truncated_jpeg_named_by_the_decode_check_and_skipped(tmp_path):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 32, "width": 48} for i in (1, 2)]
    noise = np.random.default_rng(0).integers(0, 255, [32, 48, 3]).astype(np.uint8)
    (tmp_path / "images").mkdir()
    for image in images:
        Image.fromarray(noise).save(str(tmp_path / "images" / image["file_name"]))
    _cut(str(tmp_path / "images" / "2.jpg"))
    ann_file, image_dir = _folder(tmp_path, [_ann(1, [1, 1, 9, 9], 1), _ann(2, [1, 1, 9, 9], 2)], images=images)
    with pytest.raises(ValueError) as info:
        CocoDataset(ann_file, image_dir, verify_images="decode")
    text = str(info.value)
    assert "1 bad image(s) listed in" in text and "'2.jpg': cannot decode image (jpeg::Uncompress failed" in text
    assert "--skip-bad-images" in text and "function_node" not in text
    ds = CocoDataset(ann_file, image_dir, verify_images="decode", skip_bad_images=True)
    assert ds.image_ids == [1] and ds.skipped[0][0] == "2.jpg"
    assert ds.summary()[1] == "  left out: 1 bad image(s) (2.jpg)"
    # What is left decodes all the way through the training pipeline.
    batches = list(make_dataset(ds, training=True, batch_size=1, image_size=(32, 48)))
    assert len(batches) == 1
    with pytest.raises(ValueError, match=r"Cannot decode image .*2.jpg: jpeg::Uncompress failed"):
        read_image(os.path.join(image_dir, "2.jpg"))


@pytest.fixture
def synthetic_with_a_cut_jpeg(tmp_path):
    """A synthetic COCO folder checked by headers only, its second training JPEG cut in half after the check."""
    paths = make_synthetic_coco(str(tmp_path), num_train=3, num_val=1, image_size=(32, 48), min_size=6)
    dataset = CocoDataset(paths["train_ann_file"], paths["train_image_dir"])  # default: headers only
    entry = dataset.get(dataset.image_ids[1])
    _cut(entry["path"])
    return dataset, entry


@pytest.mark.parametrize("training", [False, True])
def test_a_truncated_jpeg_stops_the_pipeline_naming_its_file(synthetic_with_a_cut_jpeg, training):
    dataset, entry = synthetic_with_a_cut_jpeg
    ds = make_dataset(dataset, training=training, batch_size=1, image_size=(32, 48), shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in ds:
            pass
    assert f"Cannot decode image {entry['path']}: not a complete JPEG" in str(info.value)


def test_a_truncated_jpeg_from_tfrecords_is_named_by_file_name_and_image_id(synthetic_with_a_cut_jpeg, tmp_path):
    dataset, entry = synthetic_with_a_cut_jpeg
    write_tfrecords(dataset, str(tmp_path / "records" / "train"), num_shards=1)
    records = read_tfrecords(str(tmp_path / "records" / "train-*"))
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in make_dataset(records, training=False, batch_size=1, image_size=(32, 48)):
            pass
    assert f"Cannot decode image {entry['file_name']} (image_id {entry['id']}): not a complete" in str(info.value)


def test_every_bad_image_is_named_or_counted_with_the_full_list_on_disk(tmp_path):
    names = [f"gone{i:02d}.png" for i in range(12)]
    images = [{"id": 100, "file_name": "a.png", "height": 20, "width": 30}]
    ann_file, image_dir = _folder(tmp_path, [], images=images)
    data = json.load(open(ann_file))
    data["images"] += [{"id": i, "file_name": n, "height": 20, "width": 30} for i, n in enumerate(names)]
    open(ann_file, "w").write(json.dumps(data))
    listing = str(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError) as info:
        CocoDataset(ann_file, image_dir, bad_images_file=listing)
    text = str(info.value)
    assert text.startswith(f"12 bad image(s) listed in {ann_file}")
    for name in names[:10]:
        assert f"'{name}': file not found" in text
    assert names[10] not in text and f"and 2 more (full list: {listing})" in text
    lines = open(listing).read().splitlines()
    assert lines == [f"{n}\tmissing: file not found" for n in names]


# ------------------------------------------------------- one reader everywhere


def _kinds(folder):
    """Files of every awkward kind, and the uint8 RGB pixels each must decode to."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, [12, 16, 3]).astype(np.uint8)
    out = {}
    # 16-bit grayscale: a dark image (values << 65535); PIL's convert("RGB") clips it to white.
    gray16 = (rng.integers(0, 40, [12, 16]) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(os.path.join(folder, "gray16.png"))
    out["gray16.png"] = np.repeat((gray16 // 257).astype(np.uint8)[..., None], 3, -1)
    # 16-bit RGB.
    rgb16 = rgb.astype(np.uint16) * 257
    open(os.path.join(folder, "rgb16.png"), "wb").write(tf.io.encode_png(rgb16).numpy())
    out["rgb16.png"] = rgb
    # CMYK JPEG (flat colour: JPEG loses detail, not the colour).
    Image.fromarray(np.full([12, 16, 3], (10, 200, 30), np.uint8)).convert("CMYK").save(
        os.path.join(folder, "cmyk.jpg"), quality=100
    )
    out["cmyk.jpg"] = np.full([12, 16, 3], (10, 200, 30), np.uint8)
    # Palette PNG.
    palette = Image.fromarray(rgb).quantize(8)
    palette.save(os.path.join(folder, "palette.png"))
    out["palette.png"] = np.asarray(palette.convert("RGB"))
    # Grayscale.
    gray = rng.integers(0, 255, [12, 16]).astype(np.uint8)
    Image.fromarray(gray).save(os.path.join(folder, "gray.png"))
    out["gray.png"] = np.repeat(gray[..., None], 3, -1)
    # EXIF orientation 6 ("rotate 90 degrees to display"): pixels stay as stored, 12 x 16.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full([12, 16, 3], (200, 20, 90), np.uint8)).save(
        os.path.join(folder, "exif6.jpg"), quality=100, exif=exif
    )
    out["exif6.jpg"] = np.full([12, 16, 3], (200, 20, 90), np.uint8)
    return out


def test_one_reader_same_pixels_in_predict_training_and_evaluation(tmp_path):
    from keras_gfocal.image import MEAN, STD
    from keras_gfocal.prediction import predict_images

    folder = tmp_path / "images"
    folder.mkdir()
    expected = _kinds(str(folder))
    names = sorted(expected)
    assert Image.open(folder / "exif6.jpg").getexif()[0x0112] == 6  # the file does carry the rotation

    # Predict: the detector gets read_image's pixels.
    seen = {}

    class Recorder:
        class_names = ["thing"]

        def detect(self, image):
            seen[len(seen)] = image
            empty = np.zeros([0], np.float32)
            return {
                "boxes": np.zeros([0, 4], np.float32),
                "scores": empty,
                "labels": empty.astype(np.int32),
                "category_ids": empty.astype(np.int32),
            }

    predict_images(Recorder(), [str(folder / n) for n in names], progress=False)
    # Evaluation pipeline at scale 1: denormalised pixels are the decoded ones.
    images = [{"id": i, "file_name": n, "height": 12, "width": 16} for i, n in enumerate(names)]
    ann_file, image_dir = _folder(tmp_path, [], images=images)
    ds = CocoDataset(ann_file, image_dir, verify_images="decode")
    pipeline = {}
    for batch, _, meta in make_dataset(ds, training=False, batch_size=1, image_size=(12, 16), pad_to_multiple=1):
        pipeline[int(meta["image_id"][0])] = np.round(batch[0].numpy() * STD + MEAN).astype(np.int32)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(seen[i], read_image(str(folder / name)), err_msg=name)
        np.testing.assert_array_equal(pipeline[i], seen[i].astype(np.int32), err_msg=name)
        tolerance = 3 if name.endswith(".jpg") else 1
        assert seen[i].shape == (12, 16, 3), name
        assert np.abs(seen[i].astype(int) - expected[name].astype(int)).max() <= tolerance, name
