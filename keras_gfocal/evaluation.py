"""COCO evaluation with pycocotools: detections in the dataset's own ids and pixels."""

import contextlib
import io
import json

import numpy as np
from tqdm.auto import tqdm

# The 12 numbers pycocotools prints, in its order.
COCO_METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def detections_to_coco(detections, meta, label_to_category_id):
    """Converts one batch of fixed-size detections to COCO result dicts.

    Args:
        detections: dict of NumPy arrays from ``GFocalDetector.predict``:
            ``boxes [B, D, 4]`` xyxy in model-input pixels, ``scores [B, D]``,
            ``labels [B, D]`` (contiguous), ``num_detections [B]``.
        meta: dict with ``image_id [B]``, ``scale [B]`` (resized / original) and
            ``original_size [B, 2]`` (height, width).
        label_to_category_id: sequence mapping contiguous labels to dataset ids.
    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
        original-image pixels, boxes clipped to the image.
    """
    results = []
    for i in range(len(meta["image_id"])):
        n = int(detections["num_detections"][i])
        if n == 0:
            continue
        h, w = (float(v) for v in meta["original_size"][i])
        boxes = np.asarray(detections["boxes"][i, :n], np.float64) / float(meta["scale"][i])
        boxes = np.clip(boxes, 0.0, [w, h, w, h])
        for box, score, label in zip(boxes, detections["scores"][i, :n], detections["labels"][i, :n]):
            results.append(_coco_result(meta["image_id"][i], label_to_category_id[int(label)], box, score))
    return results


def _coco_result(image_id, category_id, box_xyxy, score):
    """One COCO result dict; the box goes from xyxy to xywh."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "score": float(score),
    }


def make_eval_dataset(model, dataset, batch_size=8, image_size=None, max_boxes=100):
    """The evaluation pipeline that fits ``model``.

    The resize is ``keras_gfocal.data.input_resize.input_resize``'s: a canvas
    size -- ``image_size``, else the model's training ``image_size`` -- gives
    fixed-canvas batches; a model without one (e.g. converted
    from a reference checkpoint) gets the reference's test-time resize
    (``keras_gfocal.data.transforms.REFERENCE_TEST_SCALE``: long side <= 1333,
    short side <= 800, each image padded to its own multiple of 32, batches of
    one padded size), on which the published AP numbers depend.

    Args:
        model: a ``GFocalDetector`` (or anything with an ``image_size`` attribute).
        dataset: a ``keras_gfocal.data.CocoDataset`` or a ``tf.data.Dataset`` of records.
        batch_size: images per batch.
        image_size: optional ``(H, W)`` canvas overriding the model's.
        max_boxes: rows of the padded ground truth.
    Returns:
        ``keras_gfocal.data.make_dataset(..., training=False)`` batches
        ``(images, targets, meta)``.
    """
    from keras_gfocal.data import make_dataset
    from keras_gfocal.data.input_resize import input_resize

    resize = input_resize(model, image_size)
    return make_dataset(dataset, training=False, batch_size=batch_size, max_boxes=max_boxes, **resize.dataset_options())


def predict_coco(model, eval_dataset, label_to_category_id=None, progress=True, batch_size=8):
    """Runs ``model`` over an evaluation pipeline and collects COCO results.

    Args:
        model: anything with ``predict_on_batch(images)`` returning the detection
            dict (a ``GFocalDetector``, or an exported-model wrapper). Inputs of
            varying height and width (the reference's test resize) are run by
            Keras's ``predict_on_batch``, whose function relaxes its input
            shape after the second one instead of tracing every size.
        eval_dataset: batches ``(images, targets, meta)`` from
            ``keras_gfocal.data.make_dataset(..., training=False)``, or a
            ``keras_gfocal.data.CocoDataset``, which is run through
            ``make_eval_dataset`` (the model's canvas, or the reference's test
            resize for a model without one).
        label_to_category_id: contiguous label -> dataset id; default: the
            ``CocoDataset``'s.
        batch_size: images per batch when ``eval_dataset`` is a ``CocoDataset``.
    """
    from keras_gfocal.data import CocoDataset

    if isinstance(eval_dataset, CocoDataset):
        if label_to_category_id is None:
            label_to_category_id = eval_dataset.label_to_category_id
        eval_dataset = make_eval_dataset(model, eval_dataset, batch_size=batch_size)
    if label_to_category_id is None:
        raise ValueError("predict_coco needs label_to_category_id unless eval_dataset is a CocoDataset.")
    # A GFocalDetector's inference form, folded from the weights it has now.
    runner = model.inference_form() if hasattr(model, "inference_form") else model
    results = []
    batches = tqdm(eval_dataset, desc="predict", unit="batch", disable=not progress, leave=False)
    for images, _, meta in batches:
        detections = {k: np.asarray(v) for k, v in runner.predict_on_batch(images).items()}
        results += detections_to_coco(detections, {k: np.asarray(v) for k, v in meta.items()}, label_to_category_id)
    return results


def detect_coco(detector, dataset, progress=True, max_images=None):
    """Runs any ``keras_gfocal.export.runtime.Detector`` image by image over a
    ``keras_gfocal.data.CocoDataset`` and collects COCO results.

    Every model format is scored through this one path: the original image
    (decoded as the training pipeline decodes it) in, boxes in its pixels and
    the dataset's category ids out.
    """
    from keras_gfocal.image import read_image

    results = []
    ids = list(dataset.image_ids)[:max_images]
    for image_id in tqdm(ids, desc=f"predict ({detector.format})", unit="image", disable=not progress, leave=False):
        image = read_image(dataset.image_path(image_id))
        det = detector.detect(image)
        for box, score, category_id in zip(det["boxes"], det["scores"], det["category_ids"]):
            results.append(_coco_result(image_id, category_id, box, score))
    return results


_TABLE_ROWS = (
    ("Precision", "AP", "0.50:0.95", "all", 100),
    ("Precision", "AP", "0.50", "all", 100),
    ("Precision", "AP", "0.75", "all", 100),
    ("Precision", "AP", "0.50:0.95", "small", 100),
    ("Precision", "AP", "0.50:0.95", "medium", 100),
    ("Precision", "AP", "0.50:0.95", "large", 100),
    ("Recall", "AR", "0.50:0.95", "all", 1),
    ("Recall", "AR", "0.50:0.95", "all", 10),
    ("Recall", "AR", "0.50:0.95", "all", 100),
    ("Recall", "AR", "0.50:0.95", "small", 100),
    ("Recall", "AR", "0.50:0.95", "medium", 100),
    ("Recall", "AR", "0.50:0.95", "large", 100),
)


def format_table(stats):
    """The 12 numbers in pycocotools' summary layout, plus the AP per class."""
    lines = [
        f" {'Average ' + kind:<18} ({short}) @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3d} ]"
        f" = {stats[name]:0.3f}"
        for (kind, short, iou, area, dets), name in zip(_TABLE_ROWS, COCO_METRIC_NAMES)
    ]
    if stats.get("per_class_AP"):
        lines.append("AP per class: " + ", ".join(f"{n} {ap:.3f}" for n, ap in stats["per_class_AP"].items()))
    return "\n".join(lines)


def coco_evaluate(coco_gt, results, verbose=True, image_ids=None):
    """COCO box mAP of ``results`` against the ground truth ``coco_gt``.

    Args:
        coco_gt: a ``pycocotools.coco.COCO``.
        results: COCO result dicts (see ``detections_to_coco``).
        verbose: print pycocotools' 12-line table and the AP per class.
        image_ids: score only these images (default: all of ``coco_gt``).
    Returns:
        dict: the 12 standard numbers (``COCO_METRIC_NAMES``) and
        ``"per_class_AP"``: {category name: AP@[.5:.95]}.
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        stats = {name: 0.0 for name in COCO_METRIC_NAMES}
        stats["per_class_AP"] = {c["name"]: 0.0 for c in coco_gt.loadCats(coco_gt.getCatIds())}
        if verbose:
            print("No detections: every metric is 0.")
            print(format_table(stats))
        return stats
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(COCO_METRIC_NAMES, evaluator.stats)}
    # precision: [T IoUs, R recalls, K classes, A areas, M max dets]; area "all", 100 dets.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k]
        per_class[coco_gt.loadCats(int(cat_id))[0]["name"]] = float(np.mean(p[p > -1])) if np.any(p > -1) else 0.0
    stats["per_class_AP"] = per_class
    if verbose:
        print(format_table(stats))
    return stats


def write_results(results, path):
    """Writes COCO results as JSON (the format ``COCO.loadRes`` reads)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f)
    return path
