"""A tiny synthetic COCO-format detection dataset of filled shapes.

Each class is one shape (circle, square, triangle, ...), drawn in a random colour
on a flat, gradient or noise background; 1 to 4 objects per image with sizes from
``min_size`` pixels up to ``max_size`` (default 60 % of the shorter image side) and
little overlap. Boxes are tight around the drawn shapes. The annotation files are
real COCO "instances" JSON with non-contiguous category ids, so the whole
pipeline (id mapping, COCO evaluation) is exercised exactly as with COCO.

Generation is deterministic for a seed and fast (numpy + PIL only): about 600
256x256 JPEG images per second on one CPU core.
"""

import json
import os

import numpy as np
from PIL import Image, ImageDraw

#: (name, COCO category id) of each synthetic class, in label order.
SHAPES = (
    ("circle", 1),
    ("square", 3),
    ("triangle", 7),
    ("diamond", 8),
    ("cross", 12),
    ("hexagon", 15),
)


def synthetic_class_names(num_classes=3):
    """Class names of the synthetic dataset in label order (sorted category id)."""
    _check_num_classes(num_classes)
    return [name for name, _ in SHAPES[:num_classes]]


def synthetic_category_ids(num_classes=3):
    """COCO category ids of the synthetic classes (sorted, non-contiguous)."""
    _check_num_classes(num_classes)
    return [cat_id for _, cat_id in SHAPES[:num_classes]]


def _check_num_classes(num_classes):
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in [1, {len(SHAPES)}], got {num_classes}.")


def _background(rng, height, width):
    """Random background, uint8 ``[H, W, 3]``, and its mean colour."""
    kind = rng.integers(3)
    if kind == 0:  # flat
        color = rng.integers(0, 256, size=3)
        image = np.broadcast_to(color.astype(np.uint8), (height, width, 3)).copy()
    elif kind == 1:  # linear gradient between two colours in a random direction
        c0 = rng.integers(0, 256, size=3).astype(np.float32)
        c1 = rng.integers(0, 256, size=3).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        xs = np.arange(width, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        t = xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = (c0 + (c1 - c0) * t[..., None]).astype(np.uint8)
    else:  # noise around a base colour, blocky (low-res noise upsampled) or fine
        base = rng.integers(40, 216, size=3).astype(np.int16)
        amplitude = int(rng.integers(10, 60))
        cell = int(rng.choice([1, 4, 16]))
        small = rng.integers(-amplitude, amplitude + 1, size=(-(-height // cell), -(-width // cell), 3)).astype(
            np.int16
        )
        noise = np.repeat(np.repeat(small, cell, 0), cell, 1)[:height, :width]
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
    return image, image[::8, ::8].reshape(-1, 3).mean(0)


def _shape_geometry(shape, x0, y0, w, h):
    """PIL drawing call and exact area of a shape filling box ``(x0, y0, w, h)``."""
    x1, y1 = x0 + w - 1, y0 + h - 1  # PIL boxes are inclusive
    cx, cy = x0 + (w - 1) / 2.0, y0 + (h - 1) / 2.0
    if shape == "circle":
        return ("ellipse", [x0, y0, x1, y1]), np.pi * w * h / 4.0
    if shape == "square":
        return ("rectangle", [x0, y0, x1, y1]), float(w * h)
    if shape == "triangle":
        return ("polygon", [(cx, y0), (x1, y1), (x0, y1)]), w * h / 2.0
    if shape == "diamond":
        return ("polygon", [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]), w * h / 2.0
    if shape == "cross":
        tw, th = max(1, w // 3), max(1, h // 3)
        pts = [
            (x0 + tw, y0),
            (x1 - tw, y0),
            (x1 - tw, y0 + th),
            (x1, y0 + th),
            (x1, y1 - th),
            (x1 - tw, y1 - th),
            (x1 - tw, y1),
            (x0 + tw, y1),
            (x0 + tw, y1 - th),
            (x0, y1 - th),
            (x0, y0 + th),
            (x0 + tw, y0 + th),
        ]
        return ("polygon", pts), float(w * h - 4 * tw * th)
    if shape == "hexagon":
        q = (w - 1) / 4.0
        pts = [(x0 + q, y0), (x1 - q, y0), (x1, cy), (x1 - q, y1), (x0 + q, y1), (x0, cy)]
        return ("polygon", pts), 0.75 * w * h
    raise ValueError(f"unknown shape {shape!r}")


def _overlap(box, others):
    """Largest intersection / area of the smaller box between ``box`` and ``others``."""
    x, y, w, h = box
    worst = 0.0
    for ox, oy, ow, oh in others:
        iw = min(x + w, ox + ow) - max(x, ox)
        ih = min(y + h, oy + oh) - max(y, oy)
        if iw > 0 and ih > 0:
            worst = max(worst, iw * ih / min(w * h, ow * oh))
    return worst


def _make_image(rng, height, width, num_classes, min_size, max_size, max_overlap):
    """Draws one image. Returns (uint8 image, list of (label, [x, y, w, h], area))."""
    image, mean_color = _background(rng, height, width)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):
            # Log-uniform size so small and large objects are equally common.
            size = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
            aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
            w = int(round(min(max(size * np.sqrt(aspect), min_size), width)))
            h = int(round(min(max(size / np.sqrt(aspect), min_size), height)))
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            if _overlap((x, y, w, h), [o[1] for o in objects]) <= max_overlap:
                break
        else:
            continue
        label = int(rng.integers(num_classes))
        # A colour far enough from the background mean to be visible.
        for _attempt in range(20):
            color = rng.integers(0, 256, size=3)
            if np.abs(color - mean_color).sum() > 150:
                break
        (kind, geometry), area = _shape_geometry(SHAPES[label][0], x, y, w, h)
        getattr(draw, kind)(geometry, fill=tuple(int(c) for c in color))
        objects.append((label, [x, y, w, h], area))
    return np.asarray(canvas), objects


def _write_split(rng, split, out_dir, count, image_size, num_classes, min_size, max_size, max_overlap, image_format):
    height, width = image_size
    image_dir = os.path.join(out_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    ext = "png" if image_format == "png" else "jpg"
    for index in range(count):
        image_id = index + 1
        pixels, objects = _make_image(rng, height, width, num_classes, min_size, max_size, max_overlap)
        file_name = f"{split}_{image_id:06d}.{ext}"
        path = os.path.join(image_dir, file_name)
        if ext == "png":
            Image.fromarray(pixels).save(path, format="PNG", compress_level=1)
        else:
            Image.fromarray(pixels).save(path, format="JPEG", quality=92)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for label, bbox, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": SHAPES[label][1],
                    "bbox": [float(v) for v in bbox],
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cat_id, "name": name, "supercategory": "shape"} for name, cat_id in SHAPES[:num_classes]]
    data = {
        "info": {"description": f"keras_gfocal synthetic shapes, {split}", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    ann_file = os.path.join(out_dir, "annotations", f"instances_{split}.json")
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return image_dir, ann_file


def make_synthetic_coco(
    out_dir,
    num_train=500,
    num_val=100,
    image_size=(256, 256),
    num_classes=3,
    seed=0,
    min_size=16,
    max_size=None,
    max_overlap=0.1,
    image_format="jpg",
):
    """Writes a synthetic COCO-format dataset.

    Layout: ``out_dir/train/*.jpg``, ``out_dir/val/*.jpg``,
    ``out_dir/annotations/instances_{train,val}.json``.

    Args:
        out_dir: output folder (created; existing files are overwritten).
        num_train, num_val: number of images per split.
        image_size: ``(H, W)`` of every image.
        num_classes: 1..6 shape classes; the first three are circle (category id
            1), square (3), triangle (7).
        seed: the train and val splits are each a deterministic function of it
            (and independent of the other split's size).
        min_size: smallest object side in pixels.
        max_size: largest object side; default 60 % of the shorter image side.
        max_overlap: largest intersection over the smaller box between objects.
        image_format: ``"jpg"`` or ``"png"``.

    Returns:
        dict with ``"root"``, ``"train_image_dir"``, ``"val_image_dir"``,
        ``"train_ann_file"``, ``"val_ann_file"``, ``"class_names"``, ``"category_ids"``.
    """
    _check_num_classes(num_classes)
    height, width = (int(v) for v in image_size)
    if image_format not in ("jpg", "jpeg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}.")
    if max_size is None:
        max_size = 0.6 * min(height, width)
    if not 1 <= min_size <= max_size <= min(height, width):
        raise ValueError(
            f"Need 1 <= min_size ({min_size}) <= max_size ({max_size}) <= min(image_size) ({min(height, width)})."
        )
    out_dir = str(out_dir)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    result = {"root": out_dir}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        rng = np.random.default_rng([int(seed), split_index])
        image_dir, ann_file = _write_split(
            rng,
            split,
            out_dir,
            int(count),
            (height, width),
            num_classes,
            float(min_size),
            float(max_size),
            float(max_overlap),
            image_format,
        )
        result[f"{split}_image_dir"] = image_dir
        result[f"{split}_ann_file"] = ann_file
    result["class_names"] = synthetic_class_names(num_classes)
    result["category_ids"] = synthetic_category_ids(num_classes)
    return result
