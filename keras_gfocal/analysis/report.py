"""``gfocal analyze``: the numbers and figures of one model (and optionally a
GFocalV1 model to compare) on a COCO-format split, written to a folder and
printed as a table."""

import json
import os

import numpy as np

from keras_gfocal.analysis.collect import collect_positive_predictions, load_model
from keras_gfocal.analysis.figures import distribution_figure, quality_vs_iou_figure
from keras_gfocal.analysis.numbers import SIGNALS, correlations

#: How the printed table names each of `SIGNALS`.
SIGNAL_LABELS = {
    "dgqp_quality": "DGQP quality",
    "cls_score": "classification score alone",
    "joint_score": "joint score (cls x quality)",
    "edge_top1_mean": "edge top-1 prob. (mean of 4)",
}


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
    print(
        f"Pearson r of the real IoU with each signal, over {report['num_positives']} positive detections "
        f"(IoU >= {report['iou_floor']} with a same-class ground truth; {report['num_detections']} detections "
        f"on {report['num_images']} images):"
    )
    for key in SIGNALS:
        r = report["pearson_iou"][key]
        print(f"  {SIGNAL_LABELS[key]:<32s} {'n/a' if r is None else f'{r:+.3f}'}")
    if "v1" in report:
        v1 = report["v1"]
        for key, label in (("score", "GFocalV1 score"), ("edge_top1_mean", "GFocalV1 edge top-1 (mean)")):
            r = v1["pearson_iou"][key]
            print(f"  {label:<32s} {'n/a' if r is None else f'{r:+.3f}'}   ({v1['num_positives']} positives)")


def analyze(
    model,
    ann,
    images,
    out,
    max_images=None,
    v1_model=None,
    image_size=None,
    batch_size=8,
    iou_floor=0.1,
    score_threshold=None,
    verbose=True,
):
    """Quality-versus-IoU analysis of a model on a COCO-format dataset.

    Writes into ``out``: ``quality_vs_iou.png`` (scatter plots, see
    ``quality_vs_iou_figure``), ``distributions.png`` (the two sharpest and the
    two flattest positive detections' edge distributions, see
    ``distribution_figure``) and ``correlations.json`` (the returned dict), and
    prints the correlations as a table.

    Args:
        model: a ``GFocalDetector`` or the path of a ``.keras`` file.
        ann: COCO instances JSON; images: its image folder.
        out: output folder (created).
        max_images: use only the first N images.
        v1_model: optional GFocalV1 model (or ``.keras`` path) to compare:
            the correlation of its score with the IoU of its own positives.
        image_size: resize canvas ``(H, W)``; default each model's own rule
            (``keras_gfocal.data.input_resize``: its canvas, else the test resize).
        batch_size, iou_floor, score_threshold: see ``collect_positive_predictions``.
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
    from keras_gfocal.data import CocoDataset
    from keras_gfocal.image import read_image

    model, model_name = load_model(model)
    dataset = CocoDataset(ann, images)
    os.makedirs(out, exist_ok=True)
    kwargs = dict(
        image_size=image_size,
        batch_size=batch_size,
        max_images=max_images,
        iou_floor=iou_floor,
        score_threshold=score_threshold,
    )
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
        v1, v1_name = load_model(v1_model)
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
        results,
        files["quality_vs_iou"],
        v1_results=v1_results,
        title=f"{kind} {os.path.basename(str(model_name))}: positive detections on {results['num_images']} images "
        f"(IoU >= {iou_floor} with a same-class ground truth)",
    )

    rows = _example_rows(results)
    pictures, cache = [], {}
    for _, i in rows:
        image_id = int(results["image_ids"][i])
        if image_id not in cache:
            cache[image_id] = read_image(dataset.image_path(image_id))
        pictures.append(cache[image_id])
    idx = np.array([i for _, i in rows])
    scale = results["scales"][idx].astype(np.float64)
    distribution_figure(
        pictures,
        results["boxes"][idx] / scale[:, None],
        results["reg_logits"][idx],
        files["distributions"],
        gt_boxes=results["gt_boxes"][idx] / scale[:, None],
        points=results["points"][idx] / scale[:, None],
        strides=results["strides"][idx] / scale,
        captions=[_caption(k, results, i) for k, i in rows],
        title="Edge distributions of the sharpest and the flattest positive detections "
        "(orange bar: top-1; red: expected value; green: ground truth)",
    )
    report["files"] = files
    with open(files["correlations"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    if verbose:
        _print_table(report)
    return report
