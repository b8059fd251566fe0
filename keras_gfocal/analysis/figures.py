"""The figures of the quality analysis (matplotlib, without pyplot): scatter
plots of each signal against the real IoU, and edge distributions beside their boxes."""

import numpy as np

from keras_gfocal.analysis.numbers import pearson_or_none
from keras_gfocal.distributions import softmax_np


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
        results: the dict of ``collect_positive_predictions``.
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
        ax.set_title(f"{name}\n{_r_text(pearson_or_none(x, y))}, n = {len(x)}{spread}", fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(out_path, dpi=110)
    return out_path


def distribution_figure(
    images, boxes, reg_logits, out_path, gt_boxes=None, points=None, strides=None, captions=None, title=None
):
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
    probs = softmax_np(logits)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images] * k
    if len(images) != k:
        raise ValueError(f"distribution_figure got {len(images)} images for {k} boxes.")
    gt_boxes = None if gt_boxes is None else np.asarray(gt_boxes, np.float64).reshape(k, 4)
    points = None if points is None else np.asarray(points, np.float64).reshape(k, 2)
    strides = None if strides is None else np.asarray(strides, np.float64).reshape(k)

    fig = _figure((16.0, 2.9 * k + (0.4 if title else 0.0)))
    axes = fig.subplots(k, 5, squeeze=False, gridspec_kw={"width_ratios": [1.3, 1, 1, 1, 1]})
    bins = np.arange(num_bins)
    edge_names = ("left", "top", "right", "bottom")
    for row in range(k):
        image = np.asarray(images[row])
        img_h, img_w = image.shape[:2]
        box = boxes[row]
        region = (
            box
            if gt_boxes is None
            else np.concatenate([np.minimum(box[:2], gt_boxes[row, :2]), np.maximum(box[2:], gt_boxes[row, 2:])])
        )
        margin = 0.25 * max(region[2] - region[0], region[3] - region[1], 8.0)
        x0, y0 = int(max(0, np.floor(region[0] - margin))), int(max(0, np.floor(region[1] - margin)))
        x1, y1 = int(min(img_w, np.ceil(region[2] + margin))), int(min(img_h, np.ceil(region[3] + margin)))
        ax = axes[row, 0]
        if x1 > x0 and y1 > y0:
            ax.imshow(image[y0:y1, x0:x1], extent=(x0, x1, y1, y0), interpolation="nearest")

        ax.add_patch(_outline(box, edgecolor="red", linewidth=1.8, label="prediction"))
        if gt_boxes is not None:
            ax.add_patch(_outline(gt_boxes[row], edgecolor="lime", linewidth=1.5, linestyle="--", label="ground truth"))
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
                ax.axvline(float(target[e]), color="green", linestyle="--", linewidth=1.2, label="ground truth")
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


def _outline(xyxy, **style):
    """An unfilled matplotlib rectangle over an ``[x1, y1, x2, y2]`` box."""
    from matplotlib.patches import Rectangle

    return Rectangle(xyxy[:2], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1], fill=False, **style)
