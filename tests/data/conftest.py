"""Shared fixtures for the data tests: small hand-made COCO folders in tmp_path."""

import json
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:  # allow running without `pip install -e .`
    sys.path.insert(0, _ROOT)

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)

# Colours of the two halves of image 1 ("a.png", 40 x 60).
LEFT_COLOR = (200, 100, 50)
RIGHT_COLOR = (0, 50, 250)
GRAY_VALUE = 77
RGBA_COLOR = (10, 20, 30, 128)

# Categories deliberately unsorted and non-contiguous: labels are 1->0, 3->1, 7->2.
CATEGORIES = [
    {"id": 7, "name": "triangle"},
    {"id": 1, "name": "circle"},
    {"id": 3, "name": "square"},
]

# Training targets expected after parsing (xyxy, original pixels), per image id.
EXPECTED_BOXES = {
    1: [[10, 5, 30, 15], [50, 30, 60, 40], [0, 0, 3, 6]],
    2: [[2, 3, 12, 11]],
    3: [[0, 0, 20, 30]],
    5: [],
    9: [[1, 1, 6, 6], [10, 2, 16, 8], [20, 10, 28, 18]],
}
EXPECTED_LABELS = {1: [2, 0, 1], 2: [0], 3: [1], 5: [], 9: [0, 1, 2]}
# (height, width) of each image.
SIZES = {1: (40, 60), 2: (20, 30), 3: (30, 20), 5: (16, 16), 9: (24, 32)}


def normalized(rgb):
    """Expected normalised value of an RGB pixel."""
    return (np.asarray(rgb, np.float32) - MEAN) / STD


def write_json(path, images, annotations, categories=CATEGORIES):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return str(path)


def save_rgb(path, array, fmt="PNG"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)


@pytest.fixture
def coco_dir(tmp_path):
    """A COCO folder exercising every parsing rule.

    Images (id: file, h x w):
      1: a.png 40x60 RGB, left half LEFT_COLOR, right half RIGHT_COLOR; a normal
         box, a crowd box, a box partly outside (clipped), a zero-width box and a
         0.5-px-high box (dropped), a box with negative origin (clipped).
      2: b.png 20x30 grayscale.
      3: c.png 30x20 RGBA (portrait).
      5: empty.png 16x16, only a crowd box -> no training boxes.
      9: sub/d.jpg 24x32 JPEG in a subfolder, three boxes.
    """
    image_dir = tmp_path / "images"
    a = np.zeros([40, 60, 3], np.uint8)
    a[:, :30] = LEFT_COLOR
    a[:, 30:] = RIGHT_COLOR
    save_rgb(str(image_dir / "a.png"), a)
    Image.fromarray(np.full([20, 30], GRAY_VALUE, np.uint8), mode="L").save(str(image_dir / "b.png"))
    Image.fromarray(np.full([30, 20, 4], RGBA_COLOR, np.uint8), mode="RGBA").save(str(image_dir / "c.png"))
    save_rgb(str(image_dir / "empty.png"), np.full([16, 16, 3], 128))
    save_rgb(str(image_dir / "sub" / "d.jpg"), np.full([24, 32, 3], 90), fmt="JPEG")

    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
        {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        {"id": 3, "file_name": "c.png", "height": 30, "width": 20},
        {"id": 5, "file_name": "empty.png", "height": 16, "width": 16},
        {"id": 9, "file_name": "sub/d.jpg", "height": 24, "width": 32},
    ]

    def ann(ann_id, image_id, cat, bbox, crowd=0):
        return {
            "id": ann_id,
            "image_id": image_id,
            "category_id": cat,
            "bbox": bbox,
            "area": float(bbox[2] * bbox[3]),
            "iscrowd": crowd,
        }

    annotations = [
        ann(1, 1, 7, [10, 5, 20, 10]),
        ann(2, 1, 3, [0, 0, 60, 40], crowd=1),
        ann(3, 1, 1, [50, 30, 20, 20]),
        ann(4, 1, 1, [5, 5, 0, 10]),
        ann(5, 1, 3, [5, 5, 10, 0.5]),
        ann(6, 1, 3, [-5, -4, 8, 10]),
        ann(7, 2, 1, [2, 3, 10, 8]),
        ann(8, 3, 3, [0, 0, 20, 30]),
        ann(9, 5, 7, [0, 0, 16, 16], crowd=1),
        ann(10, 9, 1, [1, 1, 5, 5]),
        ann(11, 9, 3, [10, 2, 6, 6]),
        ann(12, 9, 7, [20, 10, 8, 8]),
    ]
    ann_file = write_json(str(tmp_path / "annotations" / "instances.json"), images, annotations)
    return {"ann_file": ann_file, "image_dir": str(image_dir), "root": str(tmp_path)}


@pytest.fixture
def h():
    """Constants and helpers of this file (tests reach them through this fixture)."""
    return types.SimpleNamespace(
        MEAN=MEAN,
        STD=STD,
        LEFT_COLOR=LEFT_COLOR,
        RIGHT_COLOR=RIGHT_COLOR,
        GRAY_VALUE=GRAY_VALUE,
        RGBA_COLOR=RGBA_COLOR,
        EXPECTED_BOXES=EXPECTED_BOXES,
        EXPECTED_LABELS=EXPECTED_LABELS,
        SIZES=SIZES,
        normalized=normalized,
        write_json=write_json,
        save_rgb=save_rgb,
    )


@pytest.fixture
def coco(coco_dir):
    from keras_gfocal.data.coco import CocoDataset

    return CocoDataset(coco_dir["ann_file"], coco_dir["image_dir"])
