"""The ``gfocal`` command: synth, train, evaluate, predict, export, analyze, demo, convert.

Each subcommand has ``--help``; every one prints where its outputs went.

The parser is built from plain-Python modules (``constants``, ``presets``), so
``--help`` and argument errors answer without importing TensorFlow; each
command imports what it needs when it runs.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time


def _size(text):
    """``"800,1333"`` or ``"256"`` -> ``(H, W)``."""
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected H,W or one size, got {text!r}")
    return tuple(parts)


#: TensorFlow's C++ INFO and WARNING lines in absl's format (``I0000 00:00:1796457894.147004  2437
#: port.cc:153] ...``; the clock is not set that early), and the banner absl writes before them.
_TENSORFLOW_NOTICE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
)


def _import_tensorflow():
    """Imports TensorFlow with its C++ INFO and WARNING lines kept off stderr, unless the user chose.

    ``TF_CPP_MIN_LOG_LEVEL=2`` (set only if the user has not set it) quiets
    TensorFlow's C++ log once it has read the variable; but its libraries log
    while loading, before that (the oneDNN notice, once per library), whatever
    the variable says. So, if the user left the level to us, file descriptor 2
    goes to a temporary file during the import, and every line of it but those
    notices is written back to stderr afterwards.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return  # the user's level (or an earlier import) decides
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _TENSORFLOW_NOTICE.match(line)))


# ------------------------------------------------------------------ commands


def cmd_synth(args):
    from keras_gfocal.data import make_synthetic_coco

    paths = make_synthetic_coco(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        num_classes=args.num_classes,
        seed=args.seed,
    )
    print(f"Synthetic COCO dataset written to {paths['root']}:")
    for key in ("train_ann_file", "train_image_dir", "val_ann_file", "val_image_dir"):
        print(f"  {key:16s} {paths[key]}")
    return paths


def cmd_train(args):
    from keras_gfocal.training.loop import train

    if bool(args.val_ann) != bool(args.val_images):
        raise ValueError("give both --val-ann and --val-images, or neither.")
    model, history = train(
        args.train_ann,
        args.train_images,
        args.val_ann,
        args.val_images,
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        out=args.out,
        backbone_weights=_weights(args.backbone_weights),
        learning_rate=args.lr,
        multiscale=args.multiscale,
        mixed_precision=args.mixed_precision,
        eval_every=args.eval_every,
        seed=args.seed,
        skip_bad_images=args.skip_bad_images,
        verify_images=args.verify_images,
    )
    print(
        f"Model saved to {os.path.join(args.out, 'model.keras')}; checkpoints, logs (log.csv, tensorboard/) "
        f"and evaluations in {args.out}"
    )
    return model, history


def _weights(text):
    return None if text in (None, "none", "None") else text


def _open_detector(path, image_size=None):
    """Any model this package writes (``.keras``, SavedModel, ``.tflite``, ``.onnx``)."""
    from keras_gfocal.export import load_detector

    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    return load_detector(path, image_size)


def cmd_evaluate(args):
    from keras_gfocal.data import CocoDataset
    from keras_gfocal.evaluation import coco_evaluate, detect_coco, make_eval_dataset, predict_coco, write_results

    if not os.path.exists(args.model):  # before the (slower) dataset check
        raise FileNotFoundError(f"model file not found: {args.model}")
    dataset = CocoDataset(args.ann, args.images, skip_bad_images=args.skip_bad_images, verify_images=args.verify_images)
    for line in dataset.summary():
        print(line)
    detector = _open_detector(args.model, args.image_size)
    start = time.time()
    if detector.format == "keras":  # batched through tf.data: the fast path
        # The model's canvas, or the reference's per-image test resize for a model without one.
        eval_ds = make_eval_dataset(detector.model, dataset, batch_size=args.batch_size, image_size=args.image_size)
        if detector.image_size is None:
            print("Resize: the reference's test resize (long side <= 1333, short side <= 800, own padding)")
        results = predict_coco(detector.model, eval_ds, dataset.label_to_category_id)
    else:
        results = detect_coco(detector, dataset)
    print(f"{len(results)} detections on {len(dataset)} images in {time.time() - start:.1f} s ({detector.format})")
    stats = coco_evaluate(dataset.coco, results)
    if args.results_json:
        write_results(results, args.results_json)
        print(f"COCO results written to {args.results_json}")
    return stats


def _list_images(inputs):
    exts = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(exts))
        elif os.path.exists(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(inputs)}")
    return files


def cmd_predict(args):
    from keras_gfocal.prediction import predict_images

    detector = _open_detector(args.model, args.image_size)
    os.makedirs(args.out, exist_ok=True)
    skipped = []
    results = predict_images(
        detector,
        _list_images(args.inputs),
        args.score_threshold,
        args.out,
        skip_bad_images=args.skip_bad_images,
        skipped=skipped,
    )
    if skipped:
        print(
            f"Skipped {len(skipped)} unreadable image(s): {', '.join(p for p, _ in skipped[:10])}"
            + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        )
    json_path = os.path.join(args.out, "predictions.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    total = sum(len(r["detections"]) for r in results)
    print(f"{total} detections on {len(results)} images ({detector.format}): {json_path}; pictures in {args.out}")
    return results


def cmd_export(args):
    from keras_gfocal.export import disk_size, export_model

    detector = _open_detector(args.model)
    if detector.format != "keras":
        raise ValueError(f"--model must be a .keras file, got a {detector.format} export: {args.model}")
    ignored = []
    if args.format != "tflite":
        ignored = [
            flag
            for flag, value in (
                ("--quantize", args.quantize),
                ("--no-nms", args.no_nms),
                ("--calibration-ann", args.calibration_ann),
            )
            if value
        ]
    if ignored:
        print(f"Note: {', '.join(ignored)} apply to --format tflite only; ignored for {args.format}.")
    precision = args.precision
    if args.format != "saved_model" and precision != "float32":
        print(f"Note: --precision {precision} applies to --format saved_model only; ignored for {args.format}.")
        precision = "float32"
    calibration = None
    if args.format == "tflite" and args.quantize == "int8":
        if not (args.calibration_ann and args.calibration_images):
            raise ValueError(
                "--quantize int8 needs --calibration-ann and --calibration-images "
                "(a COCO-format dataset whose images calibrate the activation ranges)."
            )
        calibration = (args.calibration_ann, args.calibration_images)
    start = time.time()
    path = export_model(
        detector.model,
        args.format,
        args.out,
        quantize=args.quantize,
        nms=not args.no_nms,
        calibration=calibration,
        name=args.name,
        version=args.version,
        image_size=args.image_size,
        num_calibration=args.num_calibration,
        precision=precision,
    )
    from keras_gfocal.export.metadata import metadata_path

    print(
        f"Exported {args.format} ({precision}) in {time.time() - start:.1f} s: {path} "
        f"({disk_size(path) / 1e6:.1f} MB); metadata: {metadata_path(path)}"
    )
    return path


def cmd_analyze(args):
    from keras_gfocal.analysis import analyze

    for flag, path in (("--model", args.model), ("--v1-model", args.v1_model)):
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{flag} file not found: {path}")
    report = analyze(
        args.model,
        args.ann,
        args.images,
        args.out,
        max_images=args.max_images,
        v1_model=args.v1_model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        iou_floor=args.iou_floor,
    )
    files = report["files"]
    print(f"Analysis of {report['num_positives']} positive detections written to {args.out}:")
    print(f"  scatter plots:  {files['quality_vs_iou']}")
    print(f"  distributions:  {files['distributions']}")
    print(f"  correlations:   {files['correlations']}")
    return report


def cmd_demo(args):
    import numpy as np

    from keras_gfocal.data import CocoDataset, make_dataset
    from keras_gfocal.evaluation import coco_evaluate, predict_coco, write_results
    from keras_gfocal.export.runtime import KerasDetector
    from keras_gfocal.image import read_image
    from keras_gfocal.prediction import predict_images
    from keras_gfocal.training.loop import train
    from keras_gfocal.visualize import draw_detections, image_grid

    start = time.time()
    data_dir = os.path.join(args.out, "data")
    print(
        f"[1/4] Synthetic COCO dataset ({args.num_train} train / {args.num_val} val images, "
        f"{args.image_size[0]}x{args.image_size[1]}) -> {data_dir}"
    )
    from keras_gfocal.data import make_synthetic_coco

    paths = make_synthetic_coco(
        data_dir, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size, seed=args.seed
    )
    print(f"[2/4] Training {args.preset} for {args.epochs} epochs on the CPU")
    model, _ = train(
        paths["train_ann_file"],
        paths["train_image_dir"],
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        out=os.path.join(args.out, "run"),
        learning_rate=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
    )
    print("[3/4] COCO evaluation on the synthetic validation split (pycocotools)")
    val = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    val_ds = make_dataset(val, training=False, batch_size=16, image_size=args.image_size)
    results = predict_coco(model, val_ds, val.label_to_category_id)
    stats = coco_evaluate(val.coco, results)
    write_results(results, os.path.join(args.out, "val_results.json"))
    with open(os.path.join(args.out, "val_metrics.json"), "w") as f:
        json.dump(stats, f, indent=1)
    model_path = os.path.join(args.out, "model.keras")
    model.save(model_path)

    print("[4/4] Drawing predictions on validation images")
    files = [val.image_path(i) for i in val.image_ids[: args.num_pictures]]
    preds = predict_images(KerasDetector(model, args.image_size), files, score_threshold=0.3, progress=False)
    pictures = []
    for path, pred in zip(files, preds):
        image = read_image(path)
        dets = pred["detections"]
        pictures.append(
            draw_detections(
                image,
                np.array([d["box_xyxy"] for d in dets]).reshape(-1, 4),
                [d["score"] for d in dets],
                [d["label"] for d in dets],
                val.class_names,
                score_threshold=0.3,
            )
        )
    picture_path = os.path.join(args.out, "predictions.png")
    image_grid(pictures, columns=4).save(picture_path)
    print(
        f"\nDemo finished in {(time.time() - start) / 60:.1f} min: mAP@[.5:.95] = {stats['AP']:.3f}, "
        f"mAP@.5 = {stats['AP50']:.3f}"
    )
    print(f"  model:       {model_path}")
    print(f"  picture:     {picture_path}")
    print(f"  metrics:     {os.path.join(args.out, 'val_metrics.json')}")
    print(f"  training:    {os.path.join(args.out, 'run')} (log.csv, tensorboard/, checkpoints/)")
    return stats


def cmd_convert(args):
    from keras_gfocal.convert import convert_checkpoint

    if not args.out.endswith(".keras"):
        raise ValueError(f"--out must name a .keras file, got {args.out!r}.")
    model = convert_checkpoint(args.checkpoint, args.preset, out=args.out, num_classes=args.num_classes)
    names = model.class_names or []
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    print(
        f"Converted {args.checkpoint} ({args.preset}, {model.num_classes} classes{': ' + shown if names else ''}) "
        f"to {args.out}"
    )
    return model


# -------------------------------------------------------------------- parser


def _add_dataset_image_checks(parser):
    """``--skip-bad-images`` and ``--verify-images`` of the commands that read a COCO dataset."""
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out missing, unreadable and truncated images, naming them (default: stop with an "
        "error naming every bad image)",
    )
    parser.add_argument(
        "--verify-images",
        choices=["header", "decode"],
        default="decode",
        help="image check before the run: 'decode' (default) decodes every image, finding truncated "
        "and corrupt files; 'header' reads only headers (faster on huge datasets, but a damaged "
        "image then stops the run when the pipeline reaches it)",
    )


def build_parser():
    # Plain-Python modules only: no TensorFlow before a command runs.
    from keras_gfocal.constants import EXPORT_FORMATS, PRECISIONS, REFERENCE_IMAGE_SIZE, TFLITE_QUANTIZATIONS
    from keras_gfocal.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="gfocal", description="GFocalV2 object detection for Keras: data, training, evaluation, inference."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synth",
        help="write a synthetic COCO-format dataset",
        description="Writes images of simple shapes and COCO instances JSON files.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--num-train", type=int, default=800)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--image-size", type=_size, default=(256, 256), help="H,W (default 256,256)")
    p.add_argument("--num-classes", type=int, default=3, help="1-6 shape classes (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "train",
        help="train a detector on a COCO-format dataset",
        description="Trains with model.fit under the strategy the machine offers "
        "(MultiWorkerMirroredStrategy from TF_CONFIG, MirroredStrategy on several GPUs). "
        "A killed run resumes where it stopped when started again with the same --out.",
    )
    p.add_argument("--train-ann", required=True, help="COCO instances JSON of the training set")
    p.add_argument("--train-images", required=True, help="image folder of the training set")
    p.add_argument("--val-ann", help="COCO instances JSON of the validation set (COCO mAP each epoch)")
    p.add_argument("--val-images", help="image folder of the validation set")
    p.add_argument("--preset", default="gfocal_v2_r50_fpn", choices=sorted(PRESETS))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16, help="global batch size (default 16)")
    p.add_argument(
        "--image-size",
        type=_size,
        default=REFERENCE_IMAGE_SIZE,
        help="resize canvas H,W (default {},{})".format(*REFERENCE_IMAGE_SIZE),
    )
    p.add_argument("--out", default="runs/gfocal", help="run folder (default runs/gfocal)")
    p.add_argument(
        "--backbone-weights",
        default="default",
        help="'imagenet' (torchvision's ImageNet ResNet, downloaded once), a torchvision ResNet .pth "
        "file, 'none', or 'default' (the preset's)",
    )
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default 0.01 x batch/16)")
    p.add_argument("--multiscale", type=_size, default=None, help="MIN,MAX short side for multi-scale training")
    p.add_argument("--mixed-precision", choices=["mixed_float16", "mixed_bfloat16"], default=None)
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    p.add_argument("--seed", type=int, default=None)
    _add_dataset_image_checks(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="COCO mAP of a model on a COCO-format dataset",
        description="Prints pycocotools' 12-number table and the AP per class.",
    )
    p.add_argument("--model", required=True, help="a .keras file, a SavedModel folder, a .tflite or an .onnx file")
    p.add_argument("--ann", required=True, help="COCO instances JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--results-json", help="also write the detections as a COCO results JSON here")
    p.add_argument(
        "--image-size",
        type=_size,
        default=None,
        help="H,W canvas (default: the model's training size; for a model without one, the "
        "reference's per-image test resize)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    _add_dataset_image_checks(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="detect objects in images; JSON and pictures out",
        description="Runs a model on image files or folders.",
    )
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--model", required=True, help="a .keras file, a SavedModel folder, a .tflite or an .onnx file")
    p.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="lowest score drawn (default 0.3)")
    p.add_argument(
        "--image-size",
        type=_size,
        default=None,
        help="H,W canvas (default: the model's training size; for a .keras model without one, the "
        "reference's per-image test resize)",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out images that cannot be read, naming them (default: stop at the first)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="export a .keras model to SavedModel, TFLite or ONNX",
        description="Export a trained .keras model. Flags that do not apply to a format are accepted and ignored.",
    )
    p.add_argument("--model", required=True, help="the .keras file to export")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument(
        "--quantize",
        choices=[q for q in TFLITE_QUANTIZATIONS if q],
        default=None,
        help="TFLite only: float16 weights, dynamic-range int8, or full int8 (needs calibration)",
    )
    p.add_argument(
        "--no-nms",
        action="store_true",
        help="TFLite only: raw outputs with static shapes (decode with keras_gfocal.export.numpy_postprocess)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="SavedModel only: what the network computes in (default float32). bfloat16 / float16 run the "
        "backbone, FPN and head convolutions in that precision with the float32 weights; the joint score, "
        "box decoding and NMS stay float32. bfloat16 is fast on CPUs with AVX512-BF16 / AMX; float16 suits GPUs",
    )
    p.add_argument("--calibration-ann", help="COCO instances JSON whose images calibrate full int8")
    p.add_argument("--calibration-images", help="image folder for --calibration-ann")
    p.add_argument("--num-calibration", type=int, default=100, help="calibration images used (default 100)")
    p.add_argument("--image-size", type=_size, default=None, help="H,W (default: the model's training size)")
    p.add_argument("--name", default="gfocal", help="model name: file stem / SavedModel folder (default gfocal)")
    p.add_argument("--version", type=int, default=1, help="SavedModel version folder (default 1)")
    p.add_argument("--out", default="saved_models", help="output folder (default saved_models/)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "analyze",
        help="does the predicted quality track the real IoU? plots and correlations",
        description="Runs a .keras model over a labelled COCO-format dataset, matches its final "
        "detections to same-class ground truth (IoU >= --iou-floor) and writes "
        "quality_vs_iou.png, distributions.png and correlations.json (Pearson r of the "
        "IoU with the DGQP quality, the classification score, the joint score and the "
        "edge top-1 probability). Needs matplotlib.",
    )
    p.add_argument("--model", required=True, help="the .keras model file to analyse")
    p.add_argument("--ann", required=True, help="COCO instances JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--out", default="analysis", help="output folder (default analysis/)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--v1-model", default=None, help="a GFocalV1 .keras model whose score is compared")
    p.add_argument("--image-size", type=_size, default=None, help="H,W (default: each model's training size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--iou-floor",
        type=float,
        default=0.1,
        help="smallest IoU with a same-class ground truth for a positive detection (default 0.1)",
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "convert",
        help="convert an MMDetection / official GFocal .pth checkpoint to .keras",
        description="Reads an MMDetection-layout GFocal checkpoint (the official GFocalV2 COCO "
        "models, MMDetection's GFL models) without torch and without running any code "
        "from the file, and writes the same network as a .keras model. Evaluate it with "
        "gfocal evaluate (the reference's per-image test resize is used).",
    )
    p.add_argument("--checkpoint", required=True, help="the .pth file")
    p.add_argument(
        "--preset",
        required=True,
        choices=sorted(n for n in PRESETS if "tiny" not in n),
        help="the architecture the checkpoint holds (gfocal_v2_r50_fpn for the official R50 models)",
    )
    p.add_argument("--out", required=True, help="the .keras file to write")
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="default: read off the checkpoint (the background channel of GFocalV2 models dropped)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "demo",
        help="synthetic data -> train on CPU -> COCO mAP -> picture (about 7 min on 2 CPU cores)",
        description="The end-to-end demo: needs no dataset and no internet.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--preset", default="gfocal_v2_tiny", choices=sorted(PRESETS))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-train", type=int, default=800)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--image-size", type=_size, default=(256, 256))
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--num-pictures", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _import_tensorflow()
    try:
        args.func(args)
    except (ValueError, OSError) as err:  # bad input (FileNotFoundError is an OSError): one line, no traceback
        print(f"gfocal {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:
        if not _is_image_decode_error(err):
            raise  # a real bug: keep the traceback
        named = re.search(r"Cannot decode image [^\]]*", str(err))  # the pipeline's own message, naming the file
        if named:
            print(f"gfocal {args.command}: error: {' '.join(named.group(0).split())}", file=sys.stderr)
            return 2
        cause = re.search(r"(jpeg::Uncompress|Invalid JPEG|Invalid PNG|Unknown image file format)[^\[]*", str(err))
        reason = " ".join(cause.group(0).split()) if cause else _one_line(err)
        print(
            f"gfocal {args.command}: error: an image could not be decoded in the input pipeline "
            f"({reason}); run with --verify-images decode to find (and with --skip-bad-images to "
            "leave out) every bad image.",
            file=sys.stderr,
        )
        return 2
    return 0


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def _is_image_decode_error(err):
    """A TensorFlow error from decoding an image inside a tf.data pipeline."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError):
        return False
    text = str(err)
    return any(
        k in text
        for k in (
            "Cannot decode image",
            "jpeg::Uncompress",
            "Invalid JPEG",
            "Invalid PNG",
            "Unknown image file format",
            "DecodeImage",
            "DecodeJpeg",
            "DecodePng",
            "DecodeGif",
            "DecodeBmp",
        )
    )


if __name__ == "__main__":
    sys.exit(main())
