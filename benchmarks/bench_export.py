"""Every export of one trained model, side by side: COCO mAP, size on disk, latency.

Exports a ``.keras`` model to SavedModel, TFLite (float32, float16, dynamic,
int8, float32 without NMS) and ONNX, runs each with its own runtime over a
COCO-format validation split, scores the detections with pycocotools and
prints one Markdown table (the one in the README). Latency is the median
wall time of one ``detect(image)`` call (pre-processing, model, decoding and
NMS) per image on this machine's CPU.

    gfocal demo                              # writes runs/demo/model.keras and its data
    python benchmarks/bench_export.py        # uses them by default
    python benchmarks/bench_export.py --help
"""

import argparse
import os
import statistics
import time

from common import machine_line

VARIANTS = {  # name -> (format, quantize, nms)
    "SavedModel float32": ("saved_model", None, True),
    "TFLite float32": ("tflite", None, True),
    "TFLite float32, no NMS + NumPy": ("tflite", None, False),
    "TFLite float16": ("tflite", "float16", True),
    "TFLite dynamic int8": ("tflite", "dynamic", True),
    "TFLite full int8": ("tflite", "int8", True),
    "ONNX float32": ("onnx", None, True),
}


class _Timed:
    """Times each ``detect`` call of a detector."""

    def __init__(self, detector):
        self.detector, self.format, self.seconds = detector, detector.format, []

    def detect(self, image):
        start = time.perf_counter()
        out = self.detector.detect(image)
        self.seconds.append(time.perf_counter() - start)
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo/model.keras", help="a trained .keras file")
    parser.add_argument("--data", default="runs/demo/data",
                        help="a folder made by `gfocal synth` / `gfocal demo` (val split scored, train calibrates)")
    parser.add_argument("--out", default="saved_models/bench", help="where the exports are written")
    parser.add_argument("--num-calibration", type=int, default=100)
    parser.add_argument("--max-images", type=int, default=None, help="score only the first N validation images")
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(VARIANTS), metavar="VARIANT",
                        help=f"a subset of: {', '.join(VARIANTS)}")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_gfocal  # noqa: F401  registers the serialisable classes
    from keras_gfocal.data import CocoDataset
    from keras_gfocal.evaluation import coco_evaluate, detect_coco
    from keras_gfocal.export import disk_size, export_model, load_detector
    from keras_gfocal.export.runtime import KerasDetector

    print(machine_line())
    model = keras.saving.load_model(args.model, safe_mode=True)
    ann = os.path.join(args.data, "annotations")
    val = CocoDataset(os.path.join(ann, "instances_val.json"), os.path.join(args.data, "val"))
    calibration = (os.path.join(ann, "instances_train.json"), os.path.join(args.data, "train"))
    num_images = min(len(val), args.max_images or len(val))
    print(f"model {args.model} ({model.image_size[0]}x{model.image_size[1]}), {num_images} validation images")

    def score(detector):
        timed = _Timed(detector)
        detect_coco(timed, val, progress=False, max_images=args.max_images)  # warm-up pass
        timed.seconds.clear()
        results = detect_coco(timed, val, max_images=args.max_images)
        stats = coco_evaluate(val.coco, results, verbose=False, image_ids=list(val.image_ids)[:num_images])
        return stats, statistics.median(timed.seconds) * 1000

    rows = []
    stats, latency = score(KerasDetector(model))
    rows.append(("Keras (.keras)", stats["AP"], disk_size(args.model), latency, None))
    keras_ap = stats["AP"]
    for name, (fmt, quantize, nms) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        path = export_model(model, fmt, args.out, quantize=quantize, nms=nms, calibration=calibration,
                            num_calibration=args.num_calibration)
        export_seconds = time.perf_counter() - start
        stats, latency = score(load_detector(path))
        rows.append((name, stats["AP"], disk_size(path), latency, export_seconds))
        print(f"{name}: AP {stats['AP']:.4f}, {export_seconds:.0f} s to export", flush=True)

    print()
    print("| model | mAP@[.5:.95] | vs Keras (points) | size on disk | latency / image | export time |")
    print("|---|---|---|---|---|---|")
    for name, ap, size, latency, export_seconds in rows:
        delta = "" if export_seconds is None else f"{100 * (ap - keras_ap):+.2f}"
        export = "" if export_seconds is None else f"{export_seconds:.0f} s"
        print(f"| {name} | {ap:.4f} | {delta} | {size / 1e6:.2f} MB | {latency:.1f} ms | {export} |")


if __name__ == "__main__":
    main()
