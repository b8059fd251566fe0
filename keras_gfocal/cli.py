"""The ``gfocal`` command: synth, train, evaluate, predict, demo.

Each subcommand has ``--help``; every one prints where its outputs went.
"""

import argparse
import json
import os
import sys
import time


def _size(text):
    """``"800,1333"`` or ``"256"`` -> ``(H, W)``."""
    parts = [int(p) for p in text.replace("x", ",").split(",")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected H,W or one size, got {text!r}")
    return tuple(parts)


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ------------------------------------------------------------------ commands


def cmd_synth(args):
    from keras_gfocal.data import make_synthetic_coco

    paths = make_synthetic_coco(
        args.out, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size,
        num_classes=args.num_classes, seed=args.seed,
    )
    print(f"Synthetic COCO dataset written to {paths['root']}:")
    for key in ("train_ann_file", "train_image_dir", "val_ann_file", "val_image_dir"):
        print(f"  {key:16s} {paths[key]}")
    return paths


def cmd_train(args):
    from keras_gfocal.training.loop import train

    if bool(args.val_ann) != bool(args.val_images):
        raise SystemExit("gfocal train: give both --val-ann and --val-images, or neither.")
    model, history = train(
        args.train_ann, args.train_images, args.val_ann, args.val_images,
        preset=args.preset, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        out=args.out, backbone_weights=_weights(args.backbone_weights), learning_rate=args.lr,
        multiscale=args.multiscale, mixed_precision=args.mixed_precision, eval_every=args.eval_every,
        seed=args.seed, skip_bad_images=args.skip_bad_images,
    )
    print(f"Model saved to {os.path.join(args.out, 'model.keras')}; checkpoints, logs (log.csv, tensorboard/) "
          f"and evaluations in {args.out}")
    return model, history


def _weights(text):
    return None if text in (None, "none", "None") else text


def _load(path):
    import keras

    import keras_gfocal  # noqa: F401  registers the serialisable classes

    if not os.path.exists(path):
        raise SystemExit(f"Model file not found: {path}")
    return keras.saving.load_model(path, safe_mode=True)


def cmd_evaluate(args):
    from keras_gfocal.data import CocoDataset, make_dataset
    from keras_gfocal.evaluation import coco_evaluate, predict_coco, write_results

    model = _load(args.model)
    image_size = args.image_size or getattr(model, "image_size", None) or (800, 1333)
    dataset = CocoDataset(args.ann, args.images, skip_bad_images=args.skip_bad_images)
    if dataset.num_skipped:
        print(f"Skipped {dataset.num_skipped} unreadable or missing images.")
    eval_ds = make_dataset(dataset, training=False, batch_size=args.batch_size, image_size=image_size)
    start = time.time()
    results = predict_coco(model, eval_ds, dataset.label_to_category_id)
    print(f"{len(results)} detections on {len(dataset)} images in {time.time() - start:.1f} s")
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
            raise SystemExit(f"gfocal predict: no such file or folder: {item}")
    if not files:
        raise SystemExit(f"gfocal predict: no images found in {', '.join(inputs)}")
    return files


def predict_images(model, files, image_size, score_threshold=0.3, out=None, progress=True):
    """Runs ``model`` on image files; returns a list of per-image result dicts.

    Boxes come back in each original image's pixels. If ``out`` is set, a
    picture with the boxes drawn is written there for each image.
    """
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from keras_gfocal.data import preprocess_image
    from keras_gfocal.visualize import draw_detections

    names = getattr(model, "class_names", None)
    ids = getattr(model, "category_ids", None)
    results = []
    for path in tqdm(files, desc="predict", unit="image", disable=not progress):
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except Exception as err:  # PIL raises several types for bad files
            raise SystemExit(f"gfocal predict: cannot read image {path}: {err}") from err
        inputs, scale = preprocess_image(image, image_size)
        det = {k: np.asarray(v)[0] for k, v in model.predict_on_batch(np.asarray(inputs)[None]).items()}
        n = int(det["num_detections"])
        boxes = det["boxes"][:n] / float(scale)
        boxes = np.clip(boxes, 0, [image.shape[1], image.shape[0]] * 2)
        entry = {
            "file": path,
            "detections": [
                {
                    "box_xyxy": [round(float(v), 2) for v in box],
                    "score": round(float(s), 4),
                    "label": int(c),
                    "category_id": int(ids[c]) if ids else int(c),
                    "class_name": names[c] if names else str(int(c)),
                }
                for box, s, c in zip(boxes, det["scores"][:n], det["classes"][:n])
            ],
        }
        if out:
            picture = draw_detections(image, boxes, det["scores"][:n], det["classes"][:n], names, score_threshold)
            entry["picture"] = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + "_pred.png")
            picture.save(entry["picture"])
        results.append(entry)
    return results


def cmd_predict(args):
    model = _load(args.model)
    image_size = args.image_size or getattr(model, "image_size", None) or (800, 1333)
    os.makedirs(args.out, exist_ok=True)
    results = predict_images(model, _list_images(args.inputs), image_size, args.score_threshold, args.out)
    json_path = os.path.join(args.out, "predictions.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    total = sum(len(r["detections"]) for r in results)
    print(f"{total} detections on {len(results)} images: {json_path}; pictures in {args.out}")
    return results


def cmd_demo(args):
    import numpy as np
    from PIL import Image

    from keras_gfocal.data import CocoDataset
    from keras_gfocal.evaluation import coco_evaluate, predict_coco, write_results
    from keras_gfocal.data import make_dataset
    from keras_gfocal.training.loop import train
    from keras_gfocal.visualize import draw_detections, image_grid

    start = time.time()
    data_dir = os.path.join(args.out, "data")
    print(f"[1/4] Synthetic COCO dataset ({args.num_train} train / {args.num_val} val images, "
          f"{args.image_size[0]}x{args.image_size[1]}) -> {data_dir}")
    from keras_gfocal.data import make_synthetic_coco

    paths = make_synthetic_coco(data_dir, num_train=args.num_train, num_val=args.num_val,
                                image_size=args.image_size, seed=args.seed)
    print(f"[2/4] Training {args.preset} for {args.epochs} epochs on the CPU")
    model, _ = train(
        paths["train_ann_file"], paths["train_image_dir"], preset=args.preset, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, out=os.path.join(args.out, "run"),
        learning_rate=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
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
    preds = predict_images(model, files, args.image_size, score_threshold=0.3, progress=False)
    pictures = []
    for path, pred in zip(files, preds):
        image = np.asarray(Image.open(path).convert("RGB"))
        dets = pred["detections"]
        pictures.append(draw_detections(
            image, np.array([d["box_xyxy"] for d in dets]).reshape(-1, 4), [d["score"] for d in dets],
            [d["label"] for d in dets], val.class_names, score_threshold=0.3,
        ))
    picture_path = os.path.join(args.out, "predictions.png")
    image_grid(pictures, columns=4).save(picture_path)
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min: mAP@[.5:.95] = {stats['AP']:.3f}, "
          f"mAP@.5 = {stats['AP50']:.3f}")
    print(f"  model:       {model_path}")
    print(f"  picture:     {picture_path}")
    print(f"  metrics:     {os.path.join(args.out, 'val_metrics.json')}")
    print(f"  training:    {os.path.join(args.out, 'run')} (log.csv, tensorboard/, checkpoints/)")
    return stats


# -------------------------------------------------------------------- parser


def build_parser():
    from keras_gfocal.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="gfocal", description="GFocalV2 object detection for Keras: data, training, evaluation, inference."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic COCO-format dataset",
                       description="Writes images of simple shapes and COCO instances JSON files.")
    p.add_argument("out", help="output folder")
    p.add_argument("--num-train", type=int, default=800)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--image-size", type=_size, default=(256, 256), help="H,W (default 256,256)")
    p.add_argument("--num-classes", type=int, default=3, help="1-6 shape classes (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a detector on a COCO-format dataset",
                       description="Trains with model.fit under the strategy the machine offers "
                       "(MultiWorkerMirroredStrategy from TF_CONFIG, MirroredStrategy on several GPUs). "
                       "A killed run resumes where it stopped when started again with the same --out.")
    p.add_argument("--train-ann", required=True, help="COCO instances JSON of the training set")
    p.add_argument("--train-images", required=True, help="image folder of the training set")
    p.add_argument("--val-ann", help="COCO instances JSON of the validation set (COCO mAP each epoch)")
    p.add_argument("--val-images", help="image folder of the validation set")
    p.add_argument("--preset", default="gfocal_v2_r50_fpn", choices=sorted(PRESETS))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16, help="global batch size (default 16)")
    p.add_argument("--image-size", type=_size, default=(800, 1333), help="resize canvas H,W (default 800,1333)")
    p.add_argument("--out", default="runs/gfocal", help="run folder (default runs/gfocal)")
    p.add_argument("--backbone-weights", default="default",
                   help="'imagenet', a weights file, 'none', or 'default' (the preset's)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default 0.01 x batch/16)")
    p.add_argument("--multiscale", type=_size, default=None, help="MIN,MAX short side for multi-scale training")
    p.add_argument("--mixed-precision", choices=["mixed_float16", "mixed_bfloat16"], default=None)
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--skip-bad-images", action="store_true", help="skip missing/corrupt images with a warning")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="COCO mAP of a model on a COCO-format dataset",
                       description="Prints pycocotools' 12-number table and the AP per class.")
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--ann", required=True, help="COCO instances JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--results-json", help="also write the detections as a COCO results JSON here")
    p.add_argument("--image-size", type=_size, default=None, help="H,W (default: the model's training size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--skip-bad-images", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="detect objects in images; JSON and pictures out",
                       description="Runs a model on image files or folders.")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--out", default="predictions", help="output folder (default predictions/)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="lowest score drawn (default 0.3)")
    p.add_argument("--image-size", type=_size, default=None, help="H,W (default: the model's training size)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="synthetic data -> train on CPU -> COCO mAP -> picture (about 15 min)",
                       description="The end-to-end demo: needs no dataset and no internet.")
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
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"gfocal {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
