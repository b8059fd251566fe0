"""How close the forward pass is to its own convolutions: the model's inference form against
the sum of its convolutions, each run on its own, both against the same-run sgemm.

The graph's ``Conv2D`` ops are read off the traced forward pass (input shape, kernel, stride,
padding) and grouped by shape; each shape is timed alone, ``--repeats`` convolutions with
bias and ReLU in one call, and the sum over the graph (time x count) is what the model would
take if nothing but its convolutions ran, each at its own best speed. The whole forward pass
is timed in the same rounds. Where the two are level, the graph has nothing left to remove
around its convolutions: what is left to gain is in the convolution kernels themselves, which
TensorFlow chooses (oneDNN by default on x86; Eigen with ``TF_ENABLE_ONEDNN_OPTS=0``; the
header line says which ran).

    python benchmarks/bench_conv_ceiling.py --help
    python benchmarks/bench_conv_ceiling.py                          # R50, 640x640, batch 1
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_conv_ceiling.py  # the same with Eigen's kernels
    python benchmarks/bench_conv_ceiling.py --preset gfocal_v2_tiny --size 128x128 --rounds 1   # a quick look
"""

import argparse
import collections
import os
import statistics
import time

from bench_tf_paths import _size, make_sgemm, needed_ops
from common import machine_line


def conv_shapes(graph):
    """``Counter`` of ``(input shape, kernel shape, strides, padding, dilations)`` over the
    ``Conv2D`` ops the graph's outputs need."""
    shapes = collections.Counter()
    for op in needed_ops(graph):
        if op.type == "Conv2D":
            shapes[
                (
                    tuple(op.inputs[0].shape.as_list()),
                    tuple(op.inputs[1].shape.as_list()),
                    tuple(op.get_attr("strides")),
                    op.get_attr("padding").decode(),
                    tuple(op.get_attr("dilations")),
                )
            ] += 1
    return shapes


def conv_macs(input_shape, kernel_shape, strides, padding, dilations):
    import tensorflow as tf

    out = tf.nn.conv2d(tf.zeros(input_shape), tf.zeros(kernel_shape), strides, padding, dilations=dilations)
    kh, kw, cin, _ = kernel_shape
    return int(tf.size(out)) * kh * kw * cin


def conv_alone(key, repeats, rng):
    """A zero-argument call running ``repeats`` convolutions of one shape (each on a
    different input, so none is skipped), with bias and ReLU as in the model."""
    import tensorflow as tf

    input_shape, kernel_shape, strides, padding, dilations = key
    x = tf.constant(rng.normal(size=input_shape).astype("float32"))
    kernel = tf.constant(rng.normal(size=kernel_shape).astype("float32") * 0.05)
    bias = tf.constant(rng.normal(size=kernel_shape[-1:]).astype("float32"))

    @tf.function
    def run(x):
        total = 0.0
        for r in range(repeats):
            y = tf.nn.conv2d(x + float(r), kernel, strides, padding, dilations=dilations)
            total += tf.nn.relu(tf.nn.bias_add(y, bias))[0, 0, 0, 0]
        return total

    run(x).numpy()
    return lambda: run(x).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gfocal_v2_r50_fpn")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--size", type=_size, default=(640, 640), help="HxW canvas")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=8, help="convolutions per timed call of one shape")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds; each figure is the fastest")
    parser.add_argument("--top", type=int, default=12, help="conv shapes listed, the costliest first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_gfocal import GFocalDetector

    tf.get_logger().setLevel("ERROR")  # one traced function per conv shape is meant, not a retracing
    print(machine_line())
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    kwargs = {} if "tiny" in args.preset else {"backbone_weights": None}
    model = GFocalDetector.from_preset(args.preset, num_classes=args.num_classes, **kwargs)
    model.build((None,) + args.size + (3,))
    form = model.inference_form()
    images = tf.constant(rng.normal(size=(args.batch,) + args.size + (3,)).astype("float32"))
    forward = tf.function(lambda x: form(x, training=False)).get_concrete_function(
        tf.TensorSpec(images.shape, images.dtype)
    )
    shapes = conv_shapes(forward.graph)
    macs = {key: conv_macs(*key) for key in shapes}
    total_macs = sum(macs[key] * count for key, count in shapes.items())
    print(
        f"{args.preset}, {args.size[0]}x{args.size[1]}, batch {args.batch}: {sum(shapes.values())} convolutions "
        f"of {len(shapes)} shapes, {total_macs / 1e9:.1f} GMAC",
        flush=True,
    )
    calls = {key: conv_alone(key, args.repeats, rng) for key in shapes}
    forward(images)
    sgemm = make_sgemm()
    alone = {key: float("inf") for key in shapes}
    rounds = []  # (convolutions alone, summed; sgemm around them; forward pass; sgemm around it)
    peaks = [sgemm()]
    for _ in range(args.rounds):
        summed = 0.0
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            seconds = (time.perf_counter() - start) / args.repeats
            alone[key] = min(alone[key], seconds)
            summed += seconds * shapes[key]
        peaks.append(sgemm())
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), forward(images))
        seconds = time.perf_counter() - start
        peaks.append(sgemm())
        rounds.append((summed, (peaks[-3] + peaks[-2]) / 2, seconds, (peaks[-2] + peaks[-1]) / 2))
    peak = statistics.median(peaks)
    print(f"\nsgemm (float32 2048^2 matmul): {min(peaks):.0f} to {max(peaks):.0f} GFLOP/s, median {peak:.0f}\n")
    print("| count | input | kernel | stride | ms in all | GFLOP/s | share of median sgemm |")
    print("|---|---|---|---|---|---|---|")
    ranked = sorted(shapes, key=lambda key: -alone[key] * shapes[key])
    for key in ranked[: args.top]:
        rate = 2 * macs[key] / alone[key] / 1e9
        print(
            f"| {shapes[key]} | {'x'.join(map(str, key[0]))} | {'x'.join(map(str, key[1]))} | {key[2][1]} | "
            f"{1e3 * alone[key] * shapes[key]:.1f} | {rate:.0f} | {100 * rate / peak:.0f} % |"
        )
    rest = ranked[args.top :]
    if rest:
        seconds = sum(alone[key] * shapes[key] for key in rest)
        print(f"| {sum(shapes[key] for key in rest)} | the other {len(rest)} shapes | | | {1e3 * seconds:.1f} | | |")
    flop = 2 * total_macs / 1e9
    print()
    for name, index in (("the convolutions alone, summed", 0), ("the whole forward pass", 2)):
        fastest = min(r[index] for r in rounds)
        shares = [100 * flop / r[index] / r[index + 1] for r in rounds]
        print(
            f"{name}: {fastest:.3f} s (fastest of {args.rounds}), {flop / fastest:.0f} GFLOP/s; share of the sgemm "
            f"around it {statistics.median(shares):.0f} % ({min(shares):.0f}-{max(shares):.0f})"
        )
    ratios = [r[2] / r[0] for r in rounds]
    print(
        f"forward / convolutions alone, round by round: {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
