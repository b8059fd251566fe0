"""Model speed on this machine: inference latency per image and training step time.

Prints the parameter count (ours next to the reference architecture's), the
mean and median latency of forward + decoding + NMS per image, and the mean
training step time, for one preset at one input size.

    python benchmarks/bench_model.py --help
    python benchmarks/bench_model.py --preset gfocal_v2_r50_fpn --height 800 --width 1344
"""

import argparse
import os
import statistics
import time

from common import machine_line, random_targets


def reference_param_count(num_classes=80):
    """Parameters of the reference GFLV2 R50-FPN (torchvision-style ResNet-50), by arithmetic."""
    resnet50_without_fc = 25_557_032 - (2048 * 1000 + 1000)  # torchvision's ResNet-50 minus its classifier
    conv = lambda cin, cout, k, bias=True: cin * cout * k * k + (cout if bias else 0)  # noqa: E731
    fpn = sum(conv(c, 256, 1) for c in (512, 1024, 2048)) + 3 * conv(256, 256, 3) + 2 * conv(256, 256, 3)
    towers = 2 * 4 * (conv(256, 256, 3, bias=False) + 2 * 256)  # conv + GroupNorm affine
    outputs = conv(256, num_classes, 3) + conv(256, 4 * 17, 3) + 5  # cls, reg, per-level scales
    dgqp = 20 * 64 + 64 + 64 + 1
    return {
        "backbone": resnet50_without_fc,
        "fpn": fpn,
        "head": towers + outputs + dgqp,
        "dgqp": dgqp,
        "total": resnet50_without_fc + fpn + towers + outputs + dgqp,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gfocal_v2_r50_fpn")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1344, help="1333 padded up to a multiple of 32")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=1, help="inference batch")
    parser.add_argument("--train-batch-size", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--train-iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TensorFlow's default)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from tqdm.auto import tqdm

    from keras_gfocal import GFocalDetector

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(machine_line())

    model = GFocalDetector.from_preset(args.preset, num_classes=args.num_classes, backbone_weights=None)
    model.build((None, args.height, args.width, 3))

    def parameters(layer):
        # As PyTorch counts them: BatchNorm running statistics are buffers, not parameters.
        return sum(
            int(np.prod(w.shape)) for w in layer.weights if not w.path.endswith(("moving_mean", "moving_variance"))
        )

    parts = {
        "backbone": parameters(model.backbone),
        "fpn": parameters(model.fpn),
        "head": parameters(model.head),
        "dgqp": parameters(model.head.quality) if model.head.quality is not None else 0,
    }
    total = parameters(model)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(
        f"{args.preset}: {total:,} parameters ({trainable:,} trainable, plus "
        f"{model.count_params() - total:,} BatchNorm running statistics); backbone {parts['backbone']:,}, "
        f"FPN {parts['fpn']:,}, head {parts['head']:,} (DGQP {parts['dgqp']:,})"
    )
    if args.preset == "gfocal_v2_r50_fpn":
        ref = reference_param_count(args.num_classes)
        print(
            f"reference GFLV2 R50-FPN: {ref['total']:,} parameters; backbone {ref['backbone']:,}, "
            f"FPN {ref['fpn']:,}, head {ref['head']:,} (DGQP {ref['dgqp']:,})"
        )

    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch_size, args.height, args.width, 3)).astype("float32"))

    @tf.function
    def detect(x):
        return model.decode(x, model(x, training=False))

    for _ in tqdm(range(args.warmup), desc="inference warm-up", leave=False):
        detect(images)["num_detections"].numpy()
    times = []
    for _ in tqdm(range(args.iters), desc="inference", leave=False):
        start = time.perf_counter()
        detect(images)["num_detections"].numpy()
        times.append((time.perf_counter() - start) / args.batch_size)
    print(
        f"inference (forward + decode + NMS), {args.height}x{args.width}, batch {args.batch_size}: "
        f"mean {statistics.mean(times) * 1000:.0f} ms/image, median {statistics.median(times) * 1000:.0f} ms/image"
    )

    b = args.train_batch_size
    targets = random_targets(rng, b, (args.height, args.width), args.num_classes, largest=200)
    train_images = rng.normal(size=(b, args.height, args.width, 3)).astype("float32")
    model.compile()
    model.train_on_batch(train_images, targets)  # traces the step
    step_times = []
    for _ in tqdm(range(args.train_iters), desc="train steps", leave=False):
        start = time.perf_counter()
        model.train_on_batch(train_images, targets)
        step_times.append(time.perf_counter() - start)
    step = statistics.mean(step_times)
    print(f"training step, batch {b}: mean {step:.2f} s/step ({b / step:.2f} images/s)")
    print(
        f"| {args.preset} | {args.height}x{args.width} | {total / 1e6:.2f}M | "
        f"{statistics.mean(times) * 1000:.0f} ms | {step:.2f} s (batch {b}) |"
    )


if __name__ == "__main__":
    main()
