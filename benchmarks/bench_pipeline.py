"""Input-pipeline throughput next to the model's training step rate.

Prints images per second of the training ``tf.data`` pipeline (decode, resize,
flip, normalise, pad, batch) on a synthetic COCO dataset, and of the
``gfocal_v2_tiny`` training step at the same size, so one can see whether the
input would starve the model.

    python benchmarks/bench_pipeline.py --help
"""

import argparse
import os
import tempfile
import time

from common import machine_line


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256, help="square synthetic image side (default 256)")
    parser.add_argument("--canvas", default=None, help="resize canvas H,W (default: the image size)")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="pipeline passes timed (first is warm-up)")
    parser.add_argument("--train-steps", type=int, default=10, help="model steps timed (0 to skip)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm.auto import tqdm

    from keras_gfocal import GFocalDetector
    from keras_gfocal.data import CocoDataset, make_dataset, make_synthetic_coco

    canvas = tuple(int(v) for v in args.canvas.split(",")) if args.canvas else (args.image_size,) * 2
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_synthetic_coco(
            tmp, num_train=args.num_images, num_val=1, image_size=(args.image_size, args.image_size)
        )
        dataset = CocoDataset(paths["train_ann_file"], paths["train_image_dir"])
        ds = make_dataset(dataset, training=True, batch_size=args.batch_size, image_size=canvas)
        rates = []
        for epoch in range(args.epochs):
            start, count = time.perf_counter(), 0
            for images, _ in tqdm(ds, desc=f"pipeline pass {epoch + 1}", leave=False):
                count += int(images.shape[0])
            rates.append(count / (time.perf_counter() - start))
        pipeline_rate = max(rates[1:] or rates)
        print(
            f"pipeline: {pipeline_rate:.1f} images/s ({args.image_size}px JPEG -> {canvas[0]}x{canvas[1]} canvas, "
            f"batch {args.batch_size}, best of passes 2..{args.epochs})"
        )

        if args.train_steps:
            model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=dataset.num_classes)
            model.compile()
            batches = list(ds.take(args.train_steps + 2))
            model.train_on_batch(*batches[0])
            start = time.perf_counter()
            for images, targets in tqdm(batches[1 : args.train_steps + 1], desc="train steps", leave=False):
                model.train_on_batch(images, targets)
            step = (time.perf_counter() - start) / args.train_steps
            print(f"gfocal_v2_tiny training: {step * 1000:.0f} ms/step = {args.batch_size / step:.1f} images/s")
            print(f"| {canvas[0]}x{canvas[1]} | {pipeline_rate:.1f} | {args.batch_size / step:.1f} |")


if __name__ == "__main__":
    main()
