"""COCO-format detection data: the annotation file, its images, and what was left out.

``CocoDataset`` reads a COCO "instances" JSON file, validates it against the image
folder (image checks run in parallel threads; bad images are named, listed on
disk beyond ``MAX_NAMED``, or skipped) and holds, per image, the training targets
(xyxy pixel boxes and contiguous labels). ``CocoDataset.records`` gives them as
the per-image records that ``keras_gfocal.data.pipeline.make_dataset`` batches
(the record format is described there).
"""

import concurrent.futures
import json
import logging
import os
import tempfile

import numpy as np
import tensorflow as tf

from keras_gfocal.image import decode_error_message

logger = logging.getLogger(__name__)

#: Image formats that `tf.io.decode_image` can decode (as PIL names them).
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
#: Accepted values of `CocoDataset(verify_images=...)`.
VERIFY_MODES = ("none", "exists", "header", "decode")


def _check_file_name(file_name):
    """Raises ``ValueError`` unless ``file_name`` is a relative path inside the folder."""
    if not isinstance(file_name, str) or not file_name:
        raise ValueError(f"Invalid image file_name {file_name!r}: expected a non-empty string.")
    normalized = file_name.replace("\\", "/")
    parts = normalized.split("/")
    if (
        normalized.startswith("/")
        or "://" in normalized
        or (len(parts[0]) >= 2 and parts[0][1] == ":")  # Windows drive, e.g. "C:"
        or ".." in parts
    ):
        raise ValueError(
            f"Image file_name {file_name!r} leaves the image folder: file names must be "
            "relative paths without '..' components and not absolute."
        )


def _is_number(value):
    """A JSON number (int or float, not a bool, not a string or null)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _as_int(value, what):
    """``value`` as an int, or ``ValueError`` saying ``what`` it should have been."""
    if _is_number(value) and np.isfinite(value) and float(value) == int(value):
        return int(value)
    raise ValueError(f"{what} must be an integer, got {value!r}")


#: Reasons an annotation is left out of the training targets (the reference's rules).
DROP_REASONS = {
    "crowd": "crowd annotations (iscrowd=1)",
    "small": "boxes narrower or lower than 1 pixel (width or height < 1, or negative)",
    "outside": "boxes outside the image (less than 1 pixel left after clipping)",
}
#: How many bad images an error or a warning names before it gives a count.
MAX_NAMED = 10


def _inspect_image(path, mode):
    """Checks one image file.

    Args:
        path: full path (any ``tf.io.gfile`` path).
        mode: one of ``VERIFY_MODES``; ``"none"`` is treated as ``"header"`` because this
            is only called for "none" when the annotation lacks the image size.

    Returns:
        ``(problem, size)``: ``problem`` is ``None`` when the file is fine, else a tuple
        ``(kind, message)`` with kind ``"missing"`` or ``"corrupt"``; ``size`` is
        ``(height, width)`` when the header was read, else ``None``.
    """
    try:
        if not tf.io.gfile.exists(path):
            return ("missing", "file not found"), None
    except tf.errors.OpError as err:  # e.g. permission problems on remote storage
        return ("missing", f"cannot stat file: {err}"), None
    if mode == "exists":
        return None, None
    try:
        from PIL import Image  # local import: PIL is only needed for verification

        with tf.io.gfile.GFile(path, "rb") as f:
            with Image.open(f) as image:
                fmt = image.format
                width, height = image.size
    except Exception as err:  # PIL raises several exception types for bad data
        return ("corrupt", f"cannot read image header ({type(err).__name__}: {err})"), None
    if fmt not in DECODABLE_FORMATS:
        return (
            ("corrupt", f"format {fmt} is not decodable by tf.io.decode_image"),
            (height, width),
        )
    if mode == "decode":
        try:
            data = tf.io.read_file(path)
            tf.io.decode_image(data, channels=3, expand_animations=False)
        except (tf.errors.OpError, ValueError) as err:
            return ("corrupt", f"cannot decode image ({decode_error_message(err)})"), (height, width)
    return None, (height, width)


class CocoDataset:
    """A COCO "instances" annotation file bound to its image folder.

    Category ids (often non-contiguous, e.g. 1..90 with gaps in COCO) are sorted
    and mapped to contiguous labels ``0..num_classes-1``.

    Training targets per image, following the reference:

    * crowd annotations (``iscrowd=1``) are dropped;
    * boxes ``[x, y, w, h]`` become xyxy ``[x, y, x + w, y + h]``, clipped to the
      image; a box whose width or height is below 1 pixel (before or after
      clipping) is dropped and counted;
    * images left without boxes stay in the dataset (for evaluation) and are
      excluded from training pipelines (``records(skip_empty=True)``).

    Image validation (``verify_images``), run in parallel threads at construction:

    * ``"none"``: no check (fastest, e.g. for remote buckets you trust);
    * ``"exists"``: the file exists;
    * ``"header"`` (default): the file exists and PIL can read its header, the
      format is one ``tf.io.decode_image`` decodes (JPEG, PNG, GIF, BMP) and the size
      matches the annotation's ``height`` / ``width``. Cheap (reads a few kilobytes),
      catches missing, empty, garbage and mislabelled files;
    * ``"decode"``: additionally decodes every image with ``tf.io.decode_image``, which
      also catches truncated files. Slow on large datasets.

    Bad images raise one error naming every bad file (the first ``MAX_NAMED``, then
    a count and the path of a file listing them all; ``FileNotFoundError`` when all
    are missing, else ``ValueError``), or, with ``skip_bad_images=True``, are left out
    with a logged warning; ``num_skipped`` and ``skipped`` report them.

    Every annotation kept is validated: ``image_id`` / ``category_id`` integers that
    exist, a bbox of four finite numbers. Anything else raises ``ValueError`` naming
    the annotation file, the annotation id and its image. Boxes the reference
    drops (crowd, width or height below 1, outside the image) are counted per
    reason in ``dropped`` and logged; ``summary()`` gives the lines ``gfocal train``
    and ``gfocal evaluate`` print. A ``file_name`` that
    points outside ``image_dir`` (absolute, or with ``..``) always raises ``ValueError``.
    If an image entry lacks ``height`` / ``width``, its header is read to get them.

    Args:
        ann_file: path of the COCO JSON file (any ``tf.io.gfile`` path).
        image_dir: folder the JSON's ``file_name``s are relative to.
        skip_bad_images: skip missing / unreadable images instead of raising.
        verify_images: one of ``"none"``, ``"exists"``, ``"header"``, ``"decode"``.
        num_workers: threads used for image validation.
        bad_images_file: where the full list of bad images is written when there
            are more than ``MAX_NAMED`` (default: a new temporary file).

    Attributes:
        ann_file, image_dir: as given.
        category_ids: sorted list of COCO category ids.
        class_names: list of category names in label order.
        num_classes: number of categories.
        label_to_category_id: dict ``{label: category_id}``.
        category_id_to_label: dict ``{category_id: label}``.
        image_ids: list of the usable image ids, in annotation-file order.
        num_skipped: number of images skipped because they were bad.
        skipped: list of ``(file_name, reason)`` of the skipped images.
        bad_images_file: the file listing every bad image, or None.
        dropped: dict ``{reason: count}`` of annotations left out of the training
            targets, reasons ``"crowd"``, ``"small"``, ``"outside"`` (``DROP_REASONS``).
    """

    def __init__(
        self,
        ann_file,
        image_dir,
        skip_bad_images=False,
        verify_images="header",
        num_workers=16,
        bad_images_file=None,
    ):
        if verify_images not in VERIFY_MODES:
            raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {verify_images!r}.")
        self.ann_file = str(ann_file)
        self.image_dir = str(image_dir)
        self.skip_bad_images = bool(skip_bad_images)
        self.verify_images = verify_images
        self._coco = None

        if not tf.io.gfile.exists(self.ann_file):
            raise FileNotFoundError(f"COCO annotation file not found: {self.ann_file}")
        if not tf.io.gfile.isdir(self.image_dir):
            raise FileNotFoundError(f"Image folder not found: {self.image_dir} (annotations: {self.ann_file})")
        with tf.io.gfile.GFile(self.ann_file, "r") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.ann_file}: not valid JSON ({err}).") from err
        self._data = data
        for key in ("images", "categories"):
            if key not in data:
                raise ValueError(f"{self.ann_file}: missing the '{key}' list of a COCO file.")

        self._parse_categories(data["categories"])
        entries = self._parse_images(data["images"])
        self._validate_images(entries, verify_images, num_workers, bad_images_file)
        self._parse_annotations(data.get("annotations", []))

    # ------------------------------------------------------------------ parsing
    def _parse_categories(self, categories):
        by_id = {}
        for index, cat in enumerate(categories):
            if not isinstance(cat, dict):
                raise ValueError(f"{self.ann_file}: categories[{index}] is not an object: {cat!r}.")
            cat_id = _as_int(cat.get("id"), f"{self.ann_file}: categories[{index}] 'id'")
            if cat_id in by_id:
                raise ValueError(f"{self.ann_file}: duplicate category id {cat_id}.")
            by_id[cat_id] = str(cat.get("name", cat_id))
        if not by_id:
            raise ValueError(f"{self.ann_file}: no categories.")
        self.category_ids = sorted(by_id)
        self.class_names = [by_id[c] for c in self.category_ids]
        self.num_classes = len(self.category_ids)
        self.category_id_to_label = {c: i for i, c in enumerate(self.category_ids)}
        self.label_to_category_id = {i: c for i, c in enumerate(self.category_ids)}

    def _parse_images(self, images):
        entries = []
        seen = set()
        if not isinstance(images, list):
            raise ValueError(f"{self.ann_file}: 'images' must be a list, got {type(images).__name__}.")
        for index, image in enumerate(images):
            if not isinstance(image, dict):
                raise ValueError(f"{self.ann_file}: images[{index}] is not an object: {image!r}.")
            image_id = _as_int(image.get("id"), f"{self.ann_file}: images[{index}] 'id'")
            if image_id in seen:
                raise ValueError(f"{self.ann_file}: duplicate image id {image_id}.")
            seen.add(image_id)
            file_name = image.get("file_name")
            try:
                _check_file_name(file_name)
            except ValueError as err:
                raise ValueError(f"{self.ann_file}: image {image_id}: {err}") from None
            height, width = image.get("height"), image.get("width")
            for key, value in (("height", height), ("width", width)):
                if value is not None and (
                    _as_int(value, f"{self.ann_file}: image {image_id} ({file_name}) '{key}'") < 1
                ):
                    raise ValueError(
                        f"{self.ann_file}: image {image_id} ({file_name}) has {key} {value}; sizes must be >= 1."
                    )
            entries.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "path": os.path.join(self.image_dir, file_name),
                    "height": None if height is None else int(height),
                    "width": None if width is None else int(width),
                }
            )
        return entries

    def _validate_images(self, entries, mode, num_workers, bad_images_file=None):
        def check(entry):
            needs_size = entry["height"] is None or entry["width"] is None
            if mode == "none" and not needs_size:
                return None, None
            effective = "header" if (needs_size and mode in ("none", "exists")) else mode
            return _inspect_image(entry["path"], effective)

        workers = max(1, min(int(num_workers), len(entries)))
        sizes_known = all(e["height"] is not None and e["width"] is not None for e in entries)
        if mode == "none" and sizes_known:
            results = [(None, None)] * len(entries)
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(check, entries))

        bad = []
        self._images = {}
        for entry, (problem, size) in zip(entries, results):
            if problem is None and size is not None:
                if entry["height"] is None or entry["width"] is None:
                    entry["height"], entry["width"] = size
                elif (entry["height"], entry["width"]) != tuple(size):
                    problem = (
                        "corrupt",
                        f"image is {size[1]}x{size[0]} (w x h) but the annotation file says "
                        f"{entry['width']}x{entry['height']}",
                    )
            if problem is not None:
                bad.append((entry, problem))
                continue
            self._images[entry["id"]] = entry

        self.skipped = [(e["file_name"], f"{kind}: {msg}") for e, (kind, msg) in bad]
        self.num_skipped = len(bad)
        self.bad_images_file = None
        if len(bad) > MAX_NAMED:
            self.bad_images_file = self._write_bad_list(bad, bad_images_file)
        if bad and not self.skip_bad_images:
            named = "; ".join(f"{e['file_name']!r}: {msg}" for e, (_, msg) in bad[:MAX_NAMED])
            more = (
                f"; and {len(bad) - MAX_NAMED} more (full list: {self.bad_images_file})" if len(bad) > MAX_NAMED else ""
            )
            text = (
                f"{len(bad)} bad image(s) listed in {self.ann_file} (folder {self.image_dir}): {named}{more}. "
                "Pass skip_bad_images=True (--skip-bad-images) to leave them out."
            )
            if all(kind == "missing" for _, (kind, _) in bad):
                raise FileNotFoundError(text)
            raise ValueError(text)
        for file_name, reason in self.skipped[:MAX_NAMED]:
            logger.warning("Skipping image %r: %s", file_name, reason)
        if bad:
            logger.warning(
                "Skipped %d bad image(s) of %d listed in %s%s.",
                len(bad),
                len(entries),
                self.ann_file,
                f" (full list: {self.bad_images_file})" if self.bad_images_file else "",
            )
        self.image_ids = [e["id"] for e in entries if e["id"] in self._images]

    def _write_bad_list(self, bad, path):
        """Writes every bad image, one ``file_name<TAB>reason`` a line; returns the path."""
        if path is None:
            handle, path = tempfile.mkstemp(prefix="gfocal_bad_images_", suffix=".txt")
            os.close(handle)
        with open(path, "w", encoding="utf-8") as f:
            for entry, (kind, message) in bad:
                f.write(f"{entry['file_name']}\t{kind}: {message}\n")
        return path

    def _parse_annotations(self, annotations):
        if not isinstance(annotations, list):
            raise ValueError(f"{self.ann_file}: 'annotations' must be a list, got {type(annotations).__name__}.")
        boxes = {i: [] for i in self._images}
        labels = {i: [] for i in self._images}
        known_images = set(self._images)
        skipped_ids = {e for e in self._all_image_ids()} - known_images
        self.dropped = {reason: 0 for reason in DROP_REASONS}
        for index, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise ValueError(f"{self.ann_file}: annotations[{index}] is not an object: {ann!r}.")
            ann_id = ann.get("id", f"at index {index}")
            where = f"{self.ann_file}: annotation {ann_id}"
            image_id = _as_int(ann.get("image_id"), f"{where}: 'image_id'")
            if image_id not in known_images:
                if image_id in skipped_ids:
                    continue
                raise ValueError(f"{where} refers to unknown image id {image_id}.")
            where += f" (image {image_id}, {self._images[image_id]['file_name']})"
            cat_id = _as_int(ann.get("category_id"), f"{where}: 'category_id'")
            if cat_id not in self.category_id_to_label:
                raise ValueError(f"{where} has unknown category id {cat_id}.")
            if ann.get("iscrowd", 0):
                self.dropped["crowd"] += 1
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"{where} has no [x, y, w, h] bbox: got {bbox!r}.")
            if not all(_is_number(v) for v in bbox):
                raise ValueError(f"{where}: bbox {bbox!r} must hold four numbers [x, y, w, h].")
            if not all(np.isfinite(v) for v in bbox):
                raise ValueError(f"{where}: bbox {bbox!r} holds a non-finite number (NaN or infinity).")
            x, y, w, h = (float(v) for v in bbox)
            image = self._images[image_id]
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(image["width"])), min(y + h, float(image["height"]))
            if w < 1 or h < 1:
                self.dropped["small"] += 1
                continue
            if x2 - x1 < 1 or y2 - y1 < 1:
                self.dropped["outside"] += 1
                continue
            boxes[image_id].append((x1, y1, x2, y2))
            labels[image_id].append(self.category_id_to_label[cat_id])
        for image_id, entry in self._images.items():
            entry["boxes"] = np.asarray(boxes[image_id], np.float32).reshape(-1, 4)
            entry["labels"] = np.asarray(labels[image_id], np.int32)
        for line in self.summary()[1:]:
            logger.warning("%s", line)

    @property
    def num_crowd(self):
        """Crowd annotations left out of the training targets."""
        return self.dropped["crowd"]

    @property
    def num_invalid_boxes(self):
        """Boxes dropped as too small or outside their image."""
        return self.dropped["small"] + self.dropped["outside"]

    def summary(self):
        """What was kept and what was left out, and why: a list of lines.

        The first line counts the images and boxes kept; then one line per
        reason something was left out (bad images, crowd annotations, boxes too
        small or outside the image) with its count. ``gfocal train`` and
        ``gfocal evaluate`` print these lines.
        """
        num_boxes = sum(len(e["labels"]) for e in self._images.values())
        lines = [
            f"{self.ann_file}: {len(self.image_ids)} images ({len(self.image_ids_with_boxes)} with boxes), "
            f"{num_boxes} training boxes, {self.num_classes} classes"
        ]
        if self.num_skipped:
            named = ", ".join(name for name, _ in self.skipped[:3]) + (", ..." if self.num_skipped > 3 else "")
            lines.append(f"  left out: {self.num_skipped} bad image(s) ({named})")
        for reason, count in self.dropped.items():
            if count:
                lines.append(f"  left out: {count} {DROP_REASONS[reason]}")
        return lines

    def _all_image_ids(self):
        return (int(image["id"]) for image in self._data["images"])

    # ------------------------------------------------------------------ access
    def __len__(self):
        return len(self.image_ids)

    def __repr__(self):
        return (
            f"CocoDataset(ann_file={self.ann_file!r}, images={len(self)}, "
            f"with_boxes={len(self.image_ids_with_boxes)}, classes={self.num_classes}, "
            f"skipped={self.num_skipped})"
        )

    @property
    def image_ids_with_boxes(self):
        """Image ids that have at least one training box (the training set)."""
        return [i for i in self.image_ids if len(self._images[i]["labels"]) > 0]

    def get(self, image_id):
        """Returns one image's entry.

        Returns:
            dict with ``"id"``, ``"file_name"``, ``"path"``, ``"height"``, ``"width"``,
            ``"boxes"`` (float32 ``[N, 4]`` xyxy pixels) and ``"labels"`` (int32 ``[N]``).
        """
        return dict(self._images[int(image_id)])

    def image_path(self, image_id):
        """Full path of an image file."""
        return self._images[int(image_id)]["path"]

    @property
    def coco(self):
        """A ``pycocotools.coco.COCO`` built from the same JSON (for evaluation)."""
        if self._coco is None:
            from pycocotools.coco import COCO

            coco = COCO()
            coco.dataset = self._data
            coco.createIndex()
            self._coco = coco
        return self._coco

    def records(self, skip_empty=False):
        """Per-image records as a ``tf.data.Dataset`` (the format of ``keras_gfocal.data.pipeline``).

        Args:
            skip_empty: leave out images without boxes (for training).

        Returns:
            ``tf.data.Dataset`` of dicts with ``"image_path"``, ``"boxes"`` float32 ``[N, 4]``,
            ``"labels"`` int32 ``[N]``, ``"image_id"`` int64, ``"original_size"`` int32 ``[2]``.
        """
        ids = self.image_ids_with_boxes if skip_empty else list(self.image_ids)
        entries = [self._images[i] for i in ids]
        lengths = np.asarray([len(e["labels"]) for e in entries], np.int64)
        flat_boxes = np.concatenate([e["boxes"] for e in entries], 0) if entries else np.zeros([0, 4], np.float32)
        flat_labels = np.concatenate([e["labels"] for e in entries], 0) if entries else np.zeros([0], np.int32)
        splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        table = {
            "image_path": tf.constant([e["path"] for e in entries], tf.string),
            "image_id": tf.constant(ids, tf.int64, shape=[len(ids)]),
            "original_size": tf.constant([[e["height"], e["width"]] for e in entries], tf.int32, shape=[len(ids), 2]),
            "start": tf.constant(splits[:-1], tf.int64),
            "end": tf.constant(splits[1:], tf.int64),
        }
        all_boxes = tf.constant(flat_boxes, tf.float32)
        all_labels = tf.constant(flat_labels, tf.int32)

        def gather(row):
            start, end = row.pop("start"), row.pop("end")
            row["boxes"] = all_boxes[start:end]
            row["labels"] = all_labels[start:end]
            return row

        return tf.data.Dataset.from_tensor_slices(table).map(gather)
