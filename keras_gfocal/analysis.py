"""Does the predicted localisation quality track the real IoU?

GFocalV2's DGQP turns the shape of the four edge distributions into a quality
estimate; the joint score ``sigmoid(cls) * quality`` ranks the detections. This
module measures, on a labelled COCO-format dataset, how well each candidate
ranking signal correlates with the IoU that the detections really reach:

* `collect_positive_predictions`: the positive detections of a model, each
  with its real IoU, DGQP quality, classification score, joint score and
  per-edge top-1 probability;
* `pearson`: the correlation coefficient;
* `quality_vs_iou_figure` / `distribution_figure`: the pictures (matplotlib);
* `analyze`: all of it for one model (and optionally a GFocalV1 model to
  compare), the ``gfocal analyze`` command.

**Positive predictions.** They are what a user of the model sees: the final
detections of the model's own post-processing (per-level pre-NMS top-k, joint
score above ``score_threshold``, class-wise NMS, ``max_detections`` per
image), each matched to the ground-truth box *of its own class* with which its
box has the highest IoU; a detection is positive when that IoU is at least
``iou_floor`` (0.1). Boxes and ground truth are compared in the model-input
(resized canvas) pixels. The matching is not one-to-one (unlike COCO
evaluation): two detections of one object are both kept, since each one's own
localisation is what is judged. Detections of the wrong class or on
background are left out.
"""

import json
import os

import numpy as np

#: Names of the signals whose correlation with the IoU is measured.
SIGNALS = ("dgqp_quality", "cls_score", "joint_score", "edge_top1_mean")

_SIGNAL_LABELS = {
    "dgqp_quality": "DGQP quality",
    "cls_score": "classification score alone",
    "joint_score": "joint score (cls x quality)",
    "edge_top1_mean": "edge top-1 prob. (mean of 4)",
}


# ----------------------------------------------------------------- numerics


def pearson(x, y):
    """Pearson correlation coefficient of two equally long sequences.

    Pairs where either value is NaN or infinite are left out.

    Returns:
        float in ``[-1, 1]``; NaN when one of the two has no variance (the
        correlation is undefined).
    Raises:
        ValueError: different lengths, or fewer than 2 finite pairs.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"pearson needs two sequences of the same length, got {x.size} and {y.size}.")
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size < 2:
        raise ValueError(f"pearson needs at least 2 finite pairs, got {x.size}.")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.sum(dx * dy) / denom, -1.0, 1.0))


def _maybe_pearson(x, y):
    """`pearson`, or None when it is undefined (fewer than 2 points, no variance)."""
    try:
        r = pearson(x, y)
    except ValueError:
        return None
    return None if np.isnan(r) else r


def box_iou_matrix(boxes1, boxes2):
    """IoU of every xyxy box of ``boxes1 [N, 4]`` with every box of ``boxes2 [M, 4]`` (NumPy), ``[N, M]``."""
    a = np.asarray(boxes1, np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-6)


def match_detections(det_boxes, det_labels, gt_boxes, gt_labels, iou_floor=0.1):
    """Matches each detection to the ground truth of its class with the highest IoU.

    Ground-truth rows with a negative label (padding) are ignored. Several
    detections may match the same ground truth.

    Args:
        det_boxes: ``[N, 4]`` xyxy; det_labels: ``[N]`` contiguous labels.
        gt_boxes: ``[G, 4]`` xyxy, same pixels; gt_labels: ``[G]`` (-1 padding).
        iou_floor: smallest IoU for a match (a match also needs IoU > 0).
    Returns:
        ``(gt_index [N] int, iou [N] float)``: the index into ``gt_boxes`` of the
        matched box (-1 when no same-class box reaches ``iou_floor``) and the
        best same-class IoU (0 when the image has no box of that class).
    """
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_labels = np.asarray(det_labels).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    n = len(det_boxes)
    if n == 0 or len(gt_boxes) == 0:
        return np.full(n, -1, np.int64), np.zeros(n, np.float64)
    iou = box_iou_matrix(det_boxes, gt_boxes)
    same_class = (det_labels[:, None] == gt_labels[None, :]) & (gt_labels[None, :] >= 0)
    iou = np.where(same_class, iou, -1.0)
    best = np.argmax(iou, axis=1)
    best_iou = np.maximum(iou[np.arange(n), best], 0.0)
    matched = (best_iou >= iou_floor) & (best_iou > 0.0)
    return np.where(matched, best, -1).astype(np.int64), best_iou


# -------------------------------------------------------------- collection


def _load_model(model):
    """A `GFocalDetector` from itself or a ``.keras`` path."""
    if not isinstance(model, (str, os.PathLike)):
        return model, getattr(model, "name", "model")
    import keras

    import keras_gfocal  # noqa: F401  registers the serialisable classes

    path = os.fspath(model)
    if not os.path.isfile(path) or not path.endswith(".keras"):
        raise ValueError(
            f"The analysis needs a Keras model file (.keras) with its raw outputs, got {path!r}"
            + ("" if os.path.exists(path) else " (not found)") + "."
        )
    return keras.saving.load_model(path, safe_mode=True), path


def _softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def collect_positive_predictions(
    model, dataset, image_size=None, batch_size=8, max_images=None, iou_floor=0.1, score_threshold=None
):
    """Runs ``model`` over a dataset and returns its positive detections.

    A positive detection (see the module docstring) is a final detection whose
    box has IoU >= ``iou_floor`` with a ground-truth box of the detected class;
    it is matched to the same-class box of highest IoU.

    Args:
        model: a `GFocalDetector` (V2 or V1).
        dataset: a `keras_gfocal.data.CocoDataset`.
        image_size: ``(H, W)`` resize canvas; default the model's training
            size (``model.image_size``), else the reference's (800, 1333).
        batch_size: images per forward pass.
        max_images: use only the first N images of the dataset.
        iou_floor: smallest IoU of a positive (0.1).
        score_threshold: detection threshold; default the model's (0.05).
    Returns:
        dict of NumPy arrays, one row per positive (``N`` of them):
        ``iou`` [N] the real IoU with the matched ground truth; ``quality`` [N]
        the DGQP output at the detection's point (None for a GFocalV1 model);
        ``cls_score`` [N] the classification probability of the detected class
        alone (``joint / quality`` for V2; the score itself for V1);
        ``joint_score`` [N] the detection score; ``edge_top1`` [N, 4] the top-1
        probability of each edge distribution (l, t, r, b); ``labels`` [N];
        ``boxes``, ``gt_boxes`` [N, 4] xyxy canvas pixels; ``points`` [N, 2]
        and ``strides`` [N] of the prior point; ``reg_logits`` [N, 4, reg_max
        + 1]; ``image_ids`` [N]; ``scales`` [N] (canvas / original pixels).
        Also the scalars ``dgqp``, ``reg_max``, ``num_images``,
        ``num_detections`` (all final detections), ``iou_floor``,
        ``score_threshold``, ``image_size``.
    """
    import tensorflow as tf

    from keras_gfocal import postprocess
    from keras_gfocal.data import make_dataset
    from keras_gfocal.export.graphs import model_image_size

    if not hasattr(model, "head") or not hasattr(model, "points"):
        raise TypeError(f"collect_positive_predictions needs a GFocalDetector, got {type(model).__name__}.")
    image_size = model_image_size(model, image_size)
    threshold = model.score_threshold if score_threshold is None else float(score_threshold)
    reg_max = int(model.reg_max)
    num_bins = reg_max + 1
    source = dataset if max_images is None else dataset.records(skip_empty=False).take(int(max_images))
    batches = make_dataset(source, training=False, batch_size=batch_size, image_size=image_size)

    rows = {k: [] for k in ("iou", "quality", "cls_score", "joint_score", "edge_top1", "labels", "boxes",
                            "gt_boxes", "points", "strides", "reg_logits", "image_ids", "scales")}
    num_images = num_detections = 0
    for images, targets, meta in batches:
        outputs = model(images, training=False)
        h, w = int(images.shape[1]), int(images.shape[2])
        points, point_strides, counts = model.points(h, w)
        reg_logits = tf.cast(outputs["reg_logits"], tf.float32)
        boxes = postprocess.decode_boxes(points, point_strides, reg_logits, (h, w), reg_max)
        batch, num_points = int(reg_logits.shape[0]), int(reg_logits.shape[1])
        # Carry each point's index through NMS to read its per-point values back.
        index = tf.broadcast_to(tf.range(num_points, dtype=tf.float32)[None, :, None], [batch, num_points, 1])
        det = postprocess.postprocess_detections(
            outputs["cls_scores"], boxes, counts, pre_nms_top_k=model.pre_nms_top_k,
            score_threshold=threshold, iou_threshold=model.iou_threshold,
            max_detections=model.max_detections, point_features=index,
        )
        det = {k: np.asarray(v) for k, v in det.items()}
        cls_scores = np.asarray(outputs["cls_scores"], np.float32)
        reg_np = np.asarray(reg_logits)
        points_np, strides_np = np.asarray(points), np.asarray(point_strides)
        gt_boxes_all, gt_labels_all = np.asarray(targets["boxes"]), np.asarray(targets["labels"])
        image_ids, scales = np.asarray(meta["image_id"]), np.asarray(meta["scale"])
        num_images += batch
        for i in range(batch):
            n = int(det["num_detections"][i])
            num_detections += n
            if n == 0:
                continue
            det_labels = det["labels"][i, :n]
            gt_index, iou = match_detections(det["boxes"][i, :n], det_labels, gt_boxes_all[i], gt_labels_all[i],
                                             iou_floor)
            keep = gt_index >= 0
            if not np.any(keep):
                continue
            point = np.rint(det["point_features"][i, :n, 0]).astype(np.int64)[keep]
            labels = det_labels[keep]
            logits = reg_np[i, point].reshape(-1, 4, num_bins)
            joint = cls_scores[i, point, labels]
            if model.dgqp:
                quality = np.asarray(model.head.quality(reg_np[i, point]), np.float32)[:, 0]
                cls_alone = joint / np.maximum(quality, 1e-12)
                rows["quality"].append(quality)
            else:
                cls_alone = joint
            rows["iou"].append(iou[keep])
            rows["cls_score"].append(cls_alone)
            rows["joint_score"].append(joint)
            rows["edge_top1"].append(_softmax(logits.astype(np.float64)).max(axis=-1))
            rows["labels"].append(labels)
            rows["boxes"].append(det["boxes"][i, :n][keep])
            rows["gt_boxes"].append(gt_boxes_all[i][gt_index[keep]])
            rows["points"].append(points_np[point])
            rows["strides"].append(strides_np[point])
            rows["reg_logits"].append(logits)
            rows["image_ids"].append(np.full(len(point), image_ids[i], np.int64))
            rows["scales"].append(np.full(len(point), scales[i], np.float32))

    empty_shapes = {"edge_top1": (0, 4), "boxes": (0, 4), "gt_boxes": (0, 4), "points": (0, 2),
                    "reg_logits": (0, 4, num_bins)}
    result = {}
    for key, parts in rows.items():
        if key == "quality" and not model.dgqp:
            result[key] = None
        elif parts:
            result[key] = np.concatenate(parts, axis=0)
        else:
            result[key] = np.zeros(empty_shapes.get(key, (0,)), np.float32)
    result.update(
        dgqp=bool(model.dgqp), reg_max=reg_max, num_images=num_images, num_detections=num_detections,
        iou_floor=float(iou_floor), score_threshold=threshold, image_size=image_size,
    )
    return result


def correlations(results):
    """Pearson r of the IoU with each signal of `collect_positive_predictions`' results.

    Returns:
        ``{"dgqp_quality", "cls_score", "joint_score", "edge_top1_mean"}`` ->
        float, or None where undefined (no DGQP, fewer than 2 positives, a
        constant signal).
    """
    iou = results["iou"]
    quality = results.get("quality")
    return {
        "dgqp_quality": None if quality is None else _maybe_pearson(iou, quality),
        "cls_score": _maybe_pearson(iou, results["cls_score"]),
        "joint_score": _maybe_pearson(iou, results["joint_score"]),
        "edge_top1_mean": _maybe_pearson(iou, np.mean(results["edge_top1"], axis=-1)),
    }


# ----------------------------------------------------------------- figures


def _figure(figsize):
    """A matplotlib Figure without pyplot (no global state, no GUI backend)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "The analysis figures need matplotlib, which is not installed: pip install matplotlib "
            "(or pip install keras-gfocal[viz])."
        ) from err
    return Figure(figsize=figsize, layout="constrained")


def _r_text(r):
    return "r = n/a" if r is None or (isinstance(r, float) and np.isnan(r)) else f"r = {r:.3f}"


def quality_vs_iou_figure(results, out_path, title=None, v1_results=None):
    """Scatter plots of ranking signals against the real IoU; saves a PNG.

    One panel per signal with the IoU on x: DGQP quality (V2 models),
    classification score alone, joint score, mean edge top-1 probability, and
    with ``v1_results`` the GFocalV1 model's score. Each title gives Pearson's r.

    Args:
        results: the dict of `collect_positive_predictions`.
        out_path: PNG path.
        title: figure title.
        v1_results: optional results of a GFocalV1 model (its own positives).
    Returns:
        ``out_path``.
    """
    iou = results["iou"]
    panels = []
    if results.get("quality") is not None:
        panels.append(("DGQP quality", iou, results["quality"], "tab:blue"))
    if results.get("dgqp", True):
        panels.append(("classification score alone", iou, results["cls_score"], "tab:orange"))
        panels.append(("joint score (cls x quality)", iou, results["joint_score"], "tab:green"))
    else:
        panels.append(("score (GFocalV1, QFL)", iou, results["joint_score"], "tab:orange"))
    panels.append(("edge top-1 probability, mean of 4", iou, np.mean(results["edge_top1"], axis=-1), "tab:purple"))
    if v1_results is not None:
        panels.append(("GFocalV1 score (other model)", v1_results["iou"], v1_results["joint_score"], "tab:red"))

    fig = _figure((4.0 * len(panels), 4.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, x, y, color) in zip(axes, panels):
        ax.scatter(x, y, s=5, alpha=0.3, color=color, edgecolors="none", rasterized=True)
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("IoU with matched ground truth")
        ax.set_ylabel(name)
        spread = f", range {np.min(y):.2f}-{np.max(y):.2f}" if len(y) else ""
        ax.set_title(f"{name}\n{_r_text(_maybe_pearson(x, y))}, n = {len(x)}{spread}", fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(out_path, dpi=110)
    return out_path


def distribution_figure(images, boxes, reg_logits, out_path, gt_boxes=None, points=None, strides=None,
                        captions=None, title=None):
    """The four edge distributions of predictions beside their boxes; saves a PNG.

    One row per prediction: the image (cropped around the box) with the
    predicted box (red), the ground truth (green, dashed) and the prior point,
    then one bar chart per edge (left, top, right, bottom) over the
    ``reg_max + 1`` bins with the top-1 probability in its title, the
    distribution's expected value (red line) and, given ``points`` and
    ``strides``, the ground-truth distance (green dashed line), in bins.

    Args:
        images: one ``[H, W, 3]`` uint8 image or a list of them.
        boxes: ``[4]`` or ``[K, 4]`` xyxy boxes in the pixels of the images.
        reg_logits: ``[4, reg_max + 1]``, ``[4 * (reg_max + 1)]`` or a batch
            ``[K, ...]`` of them: the point's distribution logits.
        out_path: PNG path.
        gt_boxes: optional ``[K, 4]`` ground truth, same pixels.
        points: optional ``[K, 2]`` prior points (x, y), same pixels.
        strides: optional ``[K]`` strides, in the same pixels per bin.
        captions: optional list of K row titles.
        title: figure title.
    Returns:
        ``out_path``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    k = len(boxes)
    if k == 0:
        raise ValueError("distribution_figure needs at least one prediction.")
    logits = np.asarray(reg_logits, np.float64).reshape(k, 4, -1)
    num_bins = logits.shape[-1]
    probs = _softmax(logits)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images] * k
    if len(images) != k:
        raise ValueError(f"distribution_figure got {len(images)} images for {k} boxes.")
    gt_boxes = None if gt_boxes is None else np.asarray(gt_boxes, np.float64).reshape(k, 4)
    points = None if points is None else np.asarray(points, np.float64).reshape(k, 2)
    strides = None if strides is None else np.asarray(strides, np.float64).reshape(k)

    from matplotlib.patches import Rectangle

    fig = _figure((16.0, 2.9 * k + (0.4 if title else 0.0)))
    axes = fig.subplots(k, 5, squeeze=False, gridspec_kw={"width_ratios": [1.3, 1, 1, 1, 1]})
    bins = np.arange(num_bins)
    edge_names = ("left", "top", "right", "bottom")
    for row in range(k):
        image = np.asarray(images[row])
        img_h, img_w = image.shape[:2]
        box = boxes[row]
        region = box if gt_boxes is None else np.concatenate([np.minimum(box[:2], gt_boxes[row, :2]),
                                                              np.maximum(box[2:], gt_boxes[row, 2:])])
        margin = 0.25 * max(region[2] - region[0], region[3] - region[1], 8.0)
        x0, y0 = int(max(0, np.floor(region[0] - margin))), int(max(0, np.floor(region[1] - margin)))
        x1, y1 = int(min(img_w, np.ceil(region[2] + margin))), int(min(img_h, np.ceil(region[3] + margin)))
        ax = axes[row, 0]
        if x1 > x0 and y1 > y0:
            ax.imshow(image[y0:y1, x0:x1], extent=(x0, x1, y1, y0), interpolation="nearest")
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, edgecolor="red",
                               linewidth=1.8, label="prediction"))
        if gt_boxes is not None:
            g = gt_boxes[row]
            ax.add_patch(Rectangle(g[:2], g[2] - g[0], g[3] - g[1], fill=False, edgecolor="lime",
                                   linewidth=1.5, linestyle="--", label="ground truth"))
        if points is not None:
            ax.plot(points[row, 0], points[row, 1], "o", color="yellow", markersize=4, markeredgecolor="black")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_xticks([])
        ax.set_yticks([])
        if captions is not None:
            ax.set_title(captions[row], fontsize=9)
        target = None
        if gt_boxes is not None and points is not None and strides is not None:
            px, py = points[row]
            g = gt_boxes[row]
            target = np.clip(np.array([px - g[0], py - g[1], g[2] - px, g[3] - py]) / strides[row], 0, num_bins - 1)
        for e in range(4):
            ax = axes[row, e + 1]
            p = probs[row, e]
            top = int(np.argmax(p))
            colors = ["tab:blue"] * num_bins
            colors[top] = "tab:orange"
            ax.bar(bins, p, width=0.85, color=colors)
            ax.axvline(float(np.sum(p * bins)), color="red", linewidth=1.2, label="expected value")
            if target is not None:
                ax.axvline(float(target[e]), color="green", linestyle="--", linewidth=1.2,
                           label="ground truth")
            ax.set_ylim(0, 1)
            ax.set_xlim(-0.6, num_bins - 0.4)
            ax.set_xticks(bins[::2])
            ax.tick_params(labelsize=7)
            ax.set_title(f"{edge_names[e]}: top-1 {p[top]:.2f}", fontsize=9)
            if e == 0:
                ax.set_ylabel("probability", fontsize=8)
            if row == k - 1:
                ax.set_xlabel("bin (distance / stride)", fontsize=8)
            if row == 0 and e == 3:
                ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(out_path, dpi=100)
    return out_path


# ------------------------------------------------------------------ analyze


def _example_rows(results, per_kind=2):
    """Indices of the sharpest and flattest positives (by mean edge top-1)."""
    n = len(results["iou"])
    sharpness = np.mean(results["edge_top1"], axis=-1)
    order = np.argsort(-sharpness, kind="stable")
    take = min(per_kind, n // 2) if n >= 2 else n
    sharp = list(order[:take])
    flat = [i for i in order[::-1][:take] if i not in sharp]
    return [("sharp", int(i)) for i in sharp] + [("flat", int(i)) for i in flat]


def _caption(kind, results, i):
    parts = [f"{kind}: IoU {results['iou'][i]:.2f}"]
    if results.get("quality") is not None:
        parts.append(f"quality {results['quality'][i]:.2f}")
        parts.append(f"cls {results['cls_score'][i]:.2f}")
    parts.append(f"score {results['joint_score'][i]:.2f}")
    return ", ".join(parts)


def _print_table(report):
    print(f"Pearson r of the real IoU with each signal, over {report['num_positives']} positive detections "
          f"(IoU >= {report['iou_floor']} with a same-class ground truth; {report['num_detections']} detections "
          f"on {report['num_images']} images):")
    for key in SIGNALS:
        r = report["pearson_iou"][key]
        print(f"  {_SIGNAL_LABELS[key]:<32s} {'n/a' if r is None else f'{r:+.3f}'}")
    if "v1" in report:
        v1 = report["v1"]
        for key, label in (("score", "GFocalV1 score"), ("edge_top1_mean", "GFocalV1 edge top-1 (mean)")):
            r = v1["pearson_iou"][key]
            print(f"  {label:<32s} {'n/a' if r is None else f'{r:+.3f}'}   ({v1['num_positives']} positives)")


def analyze(model, ann, images, out, max_images=None, v1_model=None, image_size=None, batch_size=8,
            iou_floor=0.1, score_threshold=None, verbose=True):
    """Quality-versus-IoU analysis of a model on a COCO-format dataset.

    Writes into ``out``: ``quality_vs_iou.png`` (scatter plots, see
    `quality_vs_iou_figure`), ``distributions.png`` (the two sharpest and the
    two flattest positive detections' edge distributions, see
    `distribution_figure`) and ``correlations.json`` (the returned dict), and
    prints the correlations as a table.

    Args:
        model: a `GFocalDetector` or the path of a ``.keras`` file.
        ann: COCO instances JSON; images: its image folder.
        out: output folder (created).
        max_images: use only the first N images.
        v1_model: optional GFocalV1 model (or ``.keras`` path) to compare:
            the correlation of its score with the IoU of its own positives.
        image_size: resize canvas ``(H, W)``; default each model's own.
        batch_size, iou_floor, score_threshold: see `collect_positive_predictions`.
        verbose: print the table.
    Returns:
        dict: ``model``, ``dgqp``, ``num_images``, ``num_detections``,
        ``num_positives``, ``iou_floor``, ``score_threshold``, ``mean_iou``,
        ``pearson_iou`` {``dgqp_quality``, ``cls_score``, ``joint_score``,
        ``edge_top1_mean``: r or None}, with ``v1_model`` a ``v1`` dict
        (``model``, ``dgqp``, ``num_images``, ``num_detections``,
        ``num_positives``, ``mean_iou``, ``pearson_iou`` {``score``,
        ``edge_top1_mean``}), and ``files``.
    Raises:
        ValueError: the model has no positive detection on the images.
    """
    from PIL import Image

    from keras_gfocal.data import CocoDataset

    model, model_name = _load_model(model)
    dataset = CocoDataset(ann, images)
    os.makedirs(out, exist_ok=True)
    kwargs = dict(image_size=image_size, batch_size=batch_size, max_images=max_images, iou_floor=iou_floor,
                  score_threshold=score_threshold)
    results = collect_positive_predictions(model, dataset, **kwargs)
    n = len(results["iou"])
    if n == 0:
        raise ValueError(
            f"No positive detection: of {results['num_detections']} detections on {results['num_images']} images "
            f"none has IoU >= {iou_floor} with a ground-truth box of its class. Is the model trained on this "
            "dataset's classes?"
        )
    report = {
        "model": str(model_name),
        "dgqp": results["dgqp"],
        "num_images": results["num_images"],
        "num_detections": results["num_detections"],
        "num_positives": n,
        "iou_floor": results["iou_floor"],
        "score_threshold": results["score_threshold"],
        "mean_iou": float(np.mean(results["iou"])),
        "pearson_iou": correlations(results),
    }
    v1_results = None
    if v1_model is not None:
        v1, v1_name = _load_model(v1_model)
        v1_results = collect_positive_predictions(v1, dataset, **kwargs)
        v1_r = correlations(v1_results)
        report["v1"] = {
            "model": str(v1_name),
            "dgqp": v1_results["dgqp"],
            "num_images": v1_results["num_images"],
            "num_detections": v1_results["num_detections"],
            "num_positives": int(len(v1_results["iou"])),
            "mean_iou": float(np.mean(v1_results["iou"])) if len(v1_results["iou"]) else None,
            "pearson_iou": {"score": v1_r["joint_score"], "edge_top1_mean": v1_r["edge_top1_mean"]},
        }
        if len(v1_results["iou"]) == 0:
            v1_results = None

    files = {
        "quality_vs_iou": os.path.join(out, "quality_vs_iou.png"),
        "distributions": os.path.join(out, "distributions.png"),
        "correlations": os.path.join(out, "correlations.json"),
    }
    kind = "GFocalV2" if results["dgqp"] else "GFocalV1"
    quality_vs_iou_figure(
        results, files["quality_vs_iou"], v1_results=v1_results,
        title=f"{kind} {os.path.basename(str(model_name))}: positive detections on {results['num_images']} images "
              f"(IoU >= {iou_floor} with a same-class ground truth)",
    )

    rows = _example_rows(results)
    pictures, cache = [], {}
    for _, i in rows:
        image_id = int(results["image_ids"][i])
        if image_id not in cache:
            cache[image_id] = np.asarray(Image.open(dataset.image_path(image_id)).convert("RGB"))
        pictures.append(cache[image_id])
    idx = np.array([i for _, i in rows])
    scale = results["scales"][idx].astype(np.float64)
    distribution_figure(
        pictures, results["boxes"][idx] / scale[:, None], results["reg_logits"][idx], files["distributions"],
        gt_boxes=results["gt_boxes"][idx] / scale[:, None], points=results["points"][idx] / scale[:, None],
        strides=results["strides"][idx] / scale, captions=[_caption(k, results, i) for k, i in rows],
        title="Edge distributions of the sharpest and the flattest positive detections "
              "(orange bar: top-1; red: expected value; green: ground truth)",
    )
    report["files"] = files
    with open(files["correlations"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    if verbose:
        _print_table(report)
    return report
