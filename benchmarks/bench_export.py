"""Every export of one trained model, side by side: COCO mAP, size on disk, latency.

Exports a ``.keras`` model to SavedModel, TFLite (float32, float16, dynamic,
int8, float32 and float16 without NMS) and ONNX, runs each with its own
runtime over a COCO-format validation split, scores the detections with
pycocotools and prints one Markdown table (the one in the README). Latency is
the median wall time of one ``detect(image)`` call (pre-processing, model,
decoding and NMS) per image on this machine's CPU. Each TFLite file's GPU
delegate check (``keras_gfocal.export.gpu_delegate``) follows the table.

With ``--preset`` it measures speed alone, on a randomly initialised model of
that preset at ``--height`` x ``--width``: Keras ``predict`` next to the
float32, float16 and full-int8 TFLite files (NMS inside; LiteRT with XNNPACK
and ``--threads`` threads), median and range of ``--runs`` invocations on one
canvas, and each file's GPU delegate check; ``--speed-only ... "SavedModel float32"`` adds
the SavedModel's ``serving_default`` (uint8 image of the canvas size in, resizing and NMS inside).

    gfocal demo                              # writes runs/demo/model.keras and its data
    python benchmarks/bench_export.py        # uses them by default
    python benchmarks/bench_export.py --preset gfocal_v2_r50_fpn --height 800 --width 1216
    python benchmarks/bench_export.py --preset gfocal_v2_r101_dcn_fpn --height 512 --width 512 \
        --speed-only Keras "SavedModel float32" "TFLite float32" --runs 5 --out saved_models/bench_dcn
    python benchmarks/bench_export.py --help
"""

import argparse
import os
import statistics
import time

from bench_tflite_files import interpreter_with_input
from common import machine_line

VARIANTS = {  # name -> (format, quantize, nms)
    "SavedModel float32": ("saved_model", None, True),
    "TFLite float32": ("tflite", None, True),
    "TFLite float32, no NMS + NumPy": ("tflite", None, False),
    "TFLite float16": ("tflite", "float16", True),
    "TFLite float16, no NMS + NumPy": ("tflite", "float16", False),
    "TFLite dynamic int8": ("tflite", "dynamic", True),
    "TFLite full int8": ("tflite", "int8", True),
    "ONNX float32": ("onnx", None, True),
}
SPEED_VARIANTS = {"TFLite float32": None, "TFLite float16": "float16", "TFLite full int8": "int8"}


class _Timed:
    """Times each ``detect`` call of a detector."""

    def __init__(self, detector):
        self.detector, self.format, self.seconds = detector, detector.format, []

    def detect(self, image):
        start = time.perf_counter()
        out = self.detector.detect(image)
        self.seconds.append(time.perf_counter() - start)
        return out


def gpu_report(path):
    """One line: what the TFLite GPU delegate takes of ``path`` (see ``keras_gfocal.export.gpu_delegate``)."""
    try:
        from keras_gfocal.export import gpu_delegate
    except ImportError:  # a version without the check
        return "no GPU delegate check in this version"
    return gpu_delegate.check(path).summary()


def invoke_seconds(path, runs, threads, seed=0):
    """Wall seconds of ``runs`` invocations of a ``.tflite`` file on one random canvas (after one warm-up)."""
    interpreter, index, canvas = interpreter_with_input(path, threads, seed)
    seconds = []
    for i in range(runs + 1):
        start = time.perf_counter()
        interpreter.set_tensor(index, canvas)
        interpreter.invoke()
        if i:
            seconds.append(time.perf_counter() - start)
    return seconds


def saved_model_seconds(path, size, runs, rng):
    """Wall seconds of ``runs`` calls of a SavedModel's ``serving_default`` on one random uint8
    image of the canvas ``size`` (after one warm-up); resizing, normalisation and NMS included."""
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    images = tf.constant(rng.integers(0, 256, (1,) + size + (3,), dtype=np.uint8))
    seconds = []
    for i in range(runs + 1):
        start = time.perf_counter()
        serve(images=images)["num_detections"].numpy()
        if i:
            seconds.append(time.perf_counter() - start)
    return seconds


def speed(args):
    """Random-weight speed table: Keras predict and the float32 / float16 / full-int8 TFLite files."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_gfocal import GFocalDetector
    from keras_gfocal.export import disk_size, export_model

    size = (args.height, args.width)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    except RuntimeError:  # TensorFlow already started
        pass
    print(machine_line())
    print(
        f"{args.preset}, {size[0]}x{size[1]}, random weights (seed {args.seed}), {args.num_classes} classes, "
        f"batch 1; TFLite: LiteRT, XNNPACK, {args.threads} threads; {args.runs} runs after one warm-up"
    )
    keras.utils.set_random_seed(args.seed)
    kwargs = {"backbone_weights": None} if "tiny" not in args.preset else {}
    model = GFocalDetector.from_preset(args.preset, num_classes=args.num_classes, image_size=size, **kwargs)
    model.build((None,) + size + (3,))
    rng = np.random.default_rng(args.seed)
    rows = []
    if not args.speed_only or "Keras" in args.speed_only:
        images = rng.normal(size=(1,) + size + (3,)).astype("float32")
        seconds = []
        for i in range(args.runs + 1):
            start = time.perf_counter()
            model.predict_on_batch(images)
            if i:
                seconds.append(time.perf_counter() - start)
        keras_file = os.path.join(args.out, f"{args.preset}.keras")
        os.makedirs(args.out, exist_ok=True)
        model.save(keras_file)
        rows.append(("Keras predict (float32)", keras_file, seconds))
    if args.speed_only and "SavedModel float32" in args.speed_only:
        path = export_model(model, "saved_model", args.out, image_size=size)
        rows.append(("SavedModel float32", path, saved_model_seconds(path, size, args.runs, rng)))
        print(f"SavedModel float32: {disk_size(path) / 1e6:.1f} MB", flush=True)
    num_calibration = args.num_calibration or 8
    calibration = [rng.uniform(0, 255, size + (3,)).astype("float32") for _ in range(num_calibration)]
    for name, quantize in SPEED_VARIANTS.items():
        if args.speed_only and name not in args.speed_only:
            continue
        for nms in (True, False) if args.no_nms_too else (True,):
            label = name + ("" if nms else ", no NMS")
            path = export_model(
                model,
                "tflite",
                args.out,
                quantize=quantize,
                nms=nms,
                calibration=calibration,
                num_calibration=num_calibration,
            )
            rows.append((label, path, invoke_seconds(path, args.runs, args.threads)))
            print(f"{label}: {disk_size(path) / 1e6:.1f} MB; GPU delegate: {gpu_report(path)}", flush=True)
    print()
    print("| model | size on disk | latency, median (min-max) | vs Keras |")
    print("|---|---|---|---|")
    keras_median = statistics.median(rows[0][2]) if rows and rows[0][0].startswith("Keras") else None
    for name, path, seconds in rows:
        median = statistics.median(seconds)
        ratio = ""
        if keras_median is not None and not name.startswith("Keras"):
            ratio = (
                f"{keras_median / median:.1f}x faster"
                if median <= keras_median
                else f"{median / keras_median:.1f}x slower"
            )
        size_text = "" if path is None else f"{disk_size(path) / 1e6:.1f} MB"
        print(f"| {name} | {size_text} | {median:.3f} s ({min(seconds):.3f}-{max(seconds):.3f}) | {ratio} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo/model.keras", help="a trained .keras file")
    parser.add_argument(
        "--data",
        default="runs/demo/data",
        help="a folder made by `gfocal synth` / `gfocal demo` (val split scored, train calibrates)",
    )
    parser.add_argument("--out", default="saved_models/bench", help="where the exports are written")
    parser.add_argument(
        "--num-calibration",
        type=int,
        default=None,
        help="int8 calibration images (default 100; with --preset, 8 random canvases)",
    )
    parser.add_argument("--max-images", type=int, default=None, help="score only the first N validation images")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help=f"a subset of: {', '.join(VARIANTS)}",
    )
    speed_options = parser.add_argument_group("speed alone, random weights (--preset)")
    speed_options.add_argument("--preset", default=None, help="e.g. gfocal_v2_r50_fpn: measure speed, not mAP")
    speed_options.add_argument("--height", type=int, default=800)
    speed_options.add_argument("--width", type=int, default=1216)
    speed_options.add_argument("--num-classes", type=int, default=80)
    speed_options.add_argument("--runs", type=int, default=10)
    speed_options.add_argument("--threads", type=int, default=2)
    speed_options.add_argument("--seed", type=int, default=0)
    speed_options.add_argument("--no-nms-too", action="store_true", help="also the files without NMS")
    speed_options.add_argument(
        "--speed-only",
        nargs="*",
        default=None,
        metavar="ROW",
        help=f"a subset of: Keras, {', '.join(SPEED_VARIANTS)}, SavedModel float32 (only when named)",
    )
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.preset:
        return speed(args)
    import keras

    import keras_gfocal.detector  # noqa: F401  registers the serialisable classes
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

    rows, tflite_paths = [], []
    stats, latency = score(KerasDetector(model))
    rows.append(("Keras (.keras)", stats["AP"], disk_size(args.model), latency, None))
    keras_ap = stats["AP"]
    for name, (fmt, quantize, nms) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        path = export_model(
            model,
            fmt,
            args.out,
            quantize=quantize,
            nms=nms,
            calibration=calibration,
            num_calibration=args.num_calibration or 100,
        )
        export_seconds = time.perf_counter() - start
        stats, latency = score(load_detector(path))
        rows.append((name, stats["AP"], disk_size(path), latency, export_seconds))
        if fmt == "tflite":
            tflite_paths.append((name, path))
        print(f"{name}: AP {stats['AP']:.4f}, {export_seconds:.0f} s to export", flush=True)

    print()
    print("| model | mAP@[.5:.95] | vs Keras (points) | size on disk | latency / image | export time |")
    print("|---|---|---|---|---|---|")
    for name, ap, size, latency, export_seconds in rows:
        delta = "" if export_seconds is None else f"{100 * (ap - keras_ap):+.2f}"
        export = "" if export_seconds is None else f"{export_seconds:.0f} s"
        print(f"| {name} | {ap:.4f} | {delta} | {size / 1e6:.2f} MB | {latency:.1f} ms | {export} |")
    print()
    for name, path in tflite_paths:
        print(f"{name}: GPU delegate: {gpu_report(path)}")


if __name__ == "__main__":
    main()
