"""GFocalV1 against GFocalV2 on the tiny presets: COCO mAP after the same short training.

Trains ``gfocal_v1_tiny`` and ``gfocal_v2_tiny`` on one synthetic COCO dataset with the demo's
recipe (800 training images, batch 8, lr 0.01, 100 warm-up steps, decay at 2/3 and 11/12 of the
epochs), one run per seed, evaluates each on the 100 validation images with pycocotools and
prints a table: AP per run, and the mean per preset. ``--optimizer keras`` trains with Keras'
``SGD`` (decoupled decay, learning rates kept inside the momentum), the optimiser of
keras-gfocal before ``TorchSGD``, to compare the two.

    python benchmarks/bench_v1_v2.py --help
"""

import argparse
import json
import os
import tempfile
import time

from common import machine_line


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=320, help="square images and canvas (default 320)")
    parser.add_argument("--presets", nargs="+", default=["gfocal_v1_tiny", "gfocal_v2_tiny"])
    parser.add_argument("--optimizer", choices=["torch", "keras"], default="torch", help="TorchSGD or Keras' SGD")
    parser.add_argument("--json", default=None, help="also write every run's figures to this file")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from keras_gfocal.data import CocoDataset, make_dataset, make_synthetic_coco
    from keras_gfocal.evaluation import coco_evaluate, predict_coco
    from keras_gfocal.training import loop

    if args.optimizer == "keras":
        loop.reference_optimizer = lambda schedule: keras.optimizers.SGD(
            learning_rate=schedule, momentum=0.9, weight_decay=1e-4
        )
    size = (args.image_size, args.image_size)
    print(machine_line())
    print(f"{args.epochs} epochs at {size[0]}x{size[1]}, optimizer {args.optimizer}, seeds {args.seeds}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_synthetic_coco(os.path.join(tmp, "data"), num_train=800, num_val=100, image_size=size, seed=0)
        val = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
        val_ds = make_dataset(val, training=False, batch_size=16, image_size=size)
        for seed in args.seeds:
            for preset in args.presets:
                keras.utils.set_random_seed(seed)
                start = time.time()
                model, _ = loop.train(
                    paths["train_ann_file"],
                    paths["train_image_dir"],
                    preset=preset,
                    epochs=args.epochs,
                    batch_size=8,
                    image_size=size,
                    out=os.path.join(tmp, f"{preset}_{seed}"),
                    learning_rate=0.01,
                    warmup_steps=100,
                    seed=seed,
                    verbose=0,
                )
                results = predict_coco(model, val_ds, val.label_to_category_id, progress=False)
                stats = coco_evaluate(val.coco, results, verbose=False)
                runs.append({"preset": preset, "seed": seed, "AP": stats["AP"], "AP50": stats["AP50"]})
                runs[-1]["minutes"] = (time.time() - start) / 60
                print(
                    f"{preset:16s} seed {seed}: AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  "
                    f"({runs[-1]['minutes']:.1f} min)",
                    flush=True,
                )
    print(f"\n| preset | optimizer | AP per seed ({', '.join(str(s) for s in args.seeds)}) | mean AP |")
    print("| --- | --- | --- | --- |")
    for preset in args.presets:
        aps = [r["AP"] for r in runs if r["preset"] == preset]
        print(f"| {preset} | {args.optimizer} | {', '.join(f'{a:.4f}' for a in aps)} | {np.mean(aps):.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"optimizer": args.optimizer, "epochs": args.epochs, "size": size, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
