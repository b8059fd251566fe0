"""Running a detector on image files: one JSON-ready record per image, and pictures.

What ``gfocal predict`` writes and the demo draws; any
``keras_gfocal.export.runtime.Detector`` (a ``.keras`` model or any export)
runs it.
"""

import os
import sys

from tqdm.auto import tqdm

from keras_gfocal.image import read_image
from keras_gfocal.visualize import draw_detections


def predict_images(detector, files, score_threshold=0.3, out=None, progress=True, skip_bad_images=False, skipped=None):
    """Runs a ``keras_gfocal.export.runtime.Detector`` on image files.

    Images are read with ``keras_gfocal.image.read_image``, the decoder of
    training and evaluation, so every path sees the same pixels.

    Returns one dict per image: ``file`` and ``detections`` (box xyxy in the
    image's pixels, score, label, category id, class name and, where the
    format keeps it, the per-edge localisation confidence l, t, r, b). If
    ``out`` is set, a picture with the boxes drawn is written there per image.
    An unreadable image raises ``ValueError`` naming it, or with
    ``skip_bad_images`` is left out and ``(path, reason)`` appended to ``skipped``.
    """
    names = detector.class_names
    results = []
    for path in tqdm(files, desc="predict", unit="image", disable=not progress):
        try:
            image = read_image(path)
        except (ValueError, OSError) as err:
            if not skip_bad_images:
                raise ValueError(f"{err} (--skip-bad-images leaves unreadable images out)") from None
            if skipped is not None:
                skipped.append((path, str(err)))
            print(f"Skipping unreadable image: {err}", file=sys.stderr)
            continue
        det = detector.detect(image)
        detections = []
        for i, (box, score, label, category_id) in enumerate(
            zip(det["boxes"], det["scores"], det["labels"], det["category_ids"])
        ):
            entry = {
                "box_xyxy": [round(float(v), 2) for v in box],
                "score": round(float(score), 4),
                "label": int(label),
                "category_id": int(category_id),
                "class_name": names[label],
            }
            if "edge_confidence" in det:
                entry["edge_confidence_ltrb"] = [round(float(v), 4) for v in det["edge_confidence"][i]]
            detections.append(entry)
        result = {"file": path, "detections": detections}
        if out:
            picture = draw_detections(image, det["boxes"], det["scores"], det["labels"], names, score_threshold)
            result["picture"] = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + "_pred.png")
            picture.save(result["picture"])
        results.append(result)
    return results
