"""Synthetic COCO generator: valid COCO JSON, tight in-image boxes, determinism."""

import filecmp
import json
import os

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from keras_gfocal.data import CocoDataset, make_synthetic_coco, synthetic_class_names


def _make(root, seed=0, **kwargs):
    args = dict(num_train=8, num_val=3, image_size=(48, 64), min_size=6, seed=seed)
    args.update(kwargs)
    return make_synthetic_coco(str(root), **args)


def test_layout_and_pycocotools(tmp_path):
    paths = _make(tmp_path)
    ann_dir = os.path.join(str(tmp_path), "annotations")
    assert paths["train_ann_file"] == os.path.join(ann_dir, "instances_train.json")
    assert paths["val_ann_file"] == os.path.join(ann_dir, "instances_val.json")
    assert len(os.listdir(paths["train_image_dir"])) == 8
    assert len(os.listdir(paths["val_image_dir"])) == 3
    coco = COCO(paths["train_ann_file"])
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(1, "circle"), (3, "square"), (7, "triangle")]
    assert synthetic_class_names() == ["circle", "square", "triangle"]
    assert len(coco.getImgIds()) == 8
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        with Image.open(os.path.join(paths["train_image_dir"], info["file_name"])) as im:
            assert im.size == (64, 48) and im.mode == "RGB"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 4
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 48
            assert w >= 6 and h >= 6 and ann["iscrowd"] == 0
            assert 0 < ann["area"] <= w * h
            assert ann["category_id"] in (1, 3, 7)
    # The whole loader accepts it.
    ds = CocoDataset(paths["train_ann_file"], paths["train_image_dir"])
    assert ds.num_classes == 3 and len(ds.image_ids_with_boxes) == 8


def _touches(box, other):
    """True when ``other`` intersects ``box`` grown by one pixel (both [x, y, w, h])."""
    x, y, w, h = box
    ox, oy, ow, oh = other
    return ox < x + w + 1 and x - 1 < ox + ow and oy < y + h + 1 and y - 1 < oy + oh


def test_square_boxes_are_tight(tmp_path):
    paths = _make(tmp_path, image_format="png", num_train=20, num_val=0)
    data = json.load(open(paths["train_ann_file"]))
    checked = 0
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        pixels = np.asarray(Image.open(os.path.join(paths["train_image_dir"], image["file_name"])))
        pixels = pixels.astype(np.int32)
        for ann in anns:
            if ann["category_id"] != 3 or any(_touches(ann["bbox"], o["bbox"]) for o in anns if o is not ann):
                continue
            x, y, w, h = (int(v) for v in ann["bbox"])
            inside = pixels[y : y + h, x : x + w].reshape(-1, 3)
            color = inside[0]
            assert np.all(inside == color)  # a filled square of one colour
            assert ann["area"] == w * h
            # Every pixel row / column just outside the box differs from it.
            outside = []
            if x > 0:
                outside.append(pixels[y : y + h, x - 1])
            if x + w < 64:
                outside.append(pixels[y : y + h, x + w])
            if y > 0:
                outside.append(pixels[y - 1, x : x + w])
            if y + h < 48:
                outside.append(pixels[y + h, x : x + w])
            for line in outside:
                assert not np.all(line == color)
            checked += 1
    assert checked >= 3


def test_deterministic_for_seed(tmp_path):
    a = _make(tmp_path / "a", seed=3)
    b = _make(tmp_path / "b", seed=3)
    c = _make(tmp_path / "c", seed=4)
    for split in ("train", "val"):
        ja = json.load(open(a[f"{split}_ann_file"]))
        jb = json.load(open(b[f"{split}_ann_file"]))
        jc = json.load(open(c[f"{split}_ann_file"]))
        assert ja == jb
        assert ja["annotations"] != jc["annotations"]
        names = sorted(os.listdir(a[f"{split}_image_dir"]))
        match, mismatch, errors = filecmp.cmpfiles(
            a[f"{split}_image_dir"], b[f"{split}_image_dir"], names, shallow=False
        )
        assert match == names and not mismatch and not errors


def test_train_split_independent_of_val_size(tmp_path):
    a = _make(tmp_path / "a", num_val=1)
    b = _make(tmp_path / "b", num_val=5)
    assert json.load(open(a["train_ann_file"])) == json.load(open(b["train_ann_file"]))


def test_more_classes_and_sizes(tmp_path):
    paths = _make(tmp_path, num_classes=6, num_train=30, num_val=0, image_size=(64, 64), min_size=8)
    data = json.load(open(paths["train_ann_file"]))
    assert [c["id"] for c in data["categories"]] == [1, 3, 7, 8, 12, 15]
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]])
    assert sides.min() >= 8 and sides.max() <= 64
    assert sides.max() - sides.min() > 15  # a real range of sizes
    assert len({a["category_id"] for a in data["annotations"]}) >= 5
