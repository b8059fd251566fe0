"""How close the model is to its own convolutions: the forward pass of its inference form (or,
with ``--training``, a training step) against the sum of its convolutions, each run on its own,
both against the same-run sgemm.

The convolutions the traced graph runs (``Conv2D`` and, for training, ``Conv2DBackpropInput`` /
``Conv2DBackpropFilter``) are read off it with their shapes, strides and padding, and grouped;
each group is timed alone, ``--repeats`` convolutions in one call (forward ones with bias and
ReLU, as in the model), and the sum over the graph (time x count) is what the model would take
if nothing but its convolutions ran, each at its own best speed. The whole is timed in the same
rounds. Where the two are level, the graph has nothing left to remove around its convolutions:
what is left to gain is in the convolution kernels themselves, which TensorFlow chooses (oneDNN
by default on x86; Eigen with ``TF_ENABLE_ONEDNN_OPTS=0``; the first line says which ran).

    python benchmarks/bench_conv_ceiling.py --help
    python benchmarks/bench_conv_ceiling.py                          # R50, 640x640, batch 1
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_conv_ceiling.py  # the same with Eigen's kernels
    python benchmarks/bench_conv_ceiling.py --training               # a step at 800x1216, batch 2
    python benchmarks/bench_conv_ceiling.py --preset gfocal_v2_tiny --size 128x128 --rounds 1   # a quick look
"""

import argparse
import collections
import os
import statistics
import time

from bench_tf_paths import _size, gradient_function, make_sgemm, needed_ops, op_macs
from common import machine_line, random_targets

CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


def conv_shapes(graph):
    """The convolutions (forward, and the two backward ones of a training graph) that the
    graph's outputs need, grouped: ``Counter`` of ``(op type, input shape, kernel shape,
    forward output shape, strides, padding, explicit paddings, dilations)``, and each key's
    multiply-accumulates (``bench_tf_paths.op_macs``)."""
    shapes, macs = collections.Counter(), {}
    for op in needed_ops(graph):
        if op.type not in CONV_OPS:
            continue
        if op.type == "Conv2D":
            x, kernel, y = op.inputs[0].shape, op.inputs[1].shape, op.outputs[0].shape
        elif op.type == "Conv2DBackpropInput":  # (input sizes, kernel, gradient of the output)
            x, kernel, y = op.outputs[0].shape, op.inputs[1].shape, op.inputs[2].shape
        else:  # Conv2DBackpropFilter: (input, kernel sizes, gradient of the output)
            x, kernel, y = op.inputs[0].shape, op.outputs[0].shape, op.inputs[2].shape
        key = (
            op.type,
            tuple(x.as_list()),
            tuple(kernel.as_list()),
            tuple(y.as_list()),
            tuple(op.get_attr("strides")),
            op.get_attr("padding").decode(),
            tuple(op.get_attr("explicit_paddings")),
            tuple(op.get_attr("dilations")),
        )
        shapes[key] += 1
        macs[key] = op_macs(op)
    return shapes, macs


def conv_alone(key, repeats, rng):
    """A zero-argument call running ``repeats`` convolutions of one op and shape (each on a
    different input, so none is skipped); forward ones with bias and ReLU, as in the model."""
    import tensorflow as tf

    op_type, x_shape, kernel_shape, y_shape, strides, padding, explicit, dilations = key
    attrs = {"strides": strides, "padding": padding, "explicit_paddings": list(explicit), "dilations": dilations}
    x = tf.constant(rng.normal(size=x_shape).astype("float32"))
    kernel = tf.constant(rng.normal(size=kernel_shape).astype("float32") * 0.05)
    y = tf.constant(rng.normal(size=y_shape).astype("float32"))
    bias = tf.constant(rng.normal(size=kernel_shape[-1:]).astype("float32"))

    def once(shift):
        if op_type == "Conv2D":
            out = tf.raw_ops.Conv2D(input=x + shift, filter=kernel, **attrs)
            return tf.nn.relu(tf.nn.bias_add(out, bias))
        if op_type == "Conv2DBackpropInput":
            return tf.raw_ops.Conv2DBackpropInput(input_sizes=x_shape, filter=kernel, out_backprop=y + shift, **attrs)
        return tf.raw_ops.Conv2DBackpropFilter(input=x + shift, filter_sizes=kernel_shape, out_backprop=y, **attrs)

    @tf.function
    def run():
        total = 0.0
        for r in range(repeats):
            total += tf.reshape(once(float(r)), [-1])[0]
        return total

    run().numpy()
    return lambda: run().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gfocal_v2_r50_fpn")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--size", type=_size, default=None, help="HxW canvas (640x640; 800x1216 with --training)")
    parser.add_argument("--batch", type=int, default=None, help="images per call (1; 2 with --training)")
    parser.add_argument(
        "--training", action="store_true", help="a training step (train_on_batch) instead of the forward pass"
    )
    parser.add_argument("--repeats", type=int, default=8, help="convolutions per timed call of one shape")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds; each figure is the fastest")
    parser.add_argument("--top", type=int, default=12, help="conv shapes listed, the costliest first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = args.size or ((800, 1216) if args.training else (640, 640))
    batch = args.batch or (2 if args.training else 1)

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
    model.build((None,) + size + (3,))
    images = rng.normal(size=(batch,) + size + (3,)).astype("float32")
    if args.training:
        model.compile()
        targets = random_targets(rng, batch, size, args.num_classes)
        graph = gradient_function(model, images, targets).graph
        whole_name = "the training step (train_on_batch)"

        def whole():
            model.train_on_batch(images, targets)

    else:
        form = model.inference_form()
        forward = tf.function(lambda x: form(x, training=False)).get_concrete_function(
            tf.TensorSpec(images.shape, images.dtype)
        )
        graph = forward.graph
        whole_name = "the whole forward pass"

        def whole():
            tf.nest.map_structure(lambda t: t.numpy(), forward(tf.constant(images)))

    shapes, macs = conv_shapes(graph)
    total_macs = sum(macs[key] * count for key, count in shapes.items())
    kinds = collections.Counter(key[0] for key in shapes.elements())
    print(
        f"{args.preset}, {size[0]}x{size[1]}, batch {batch}, {whole_name}: "
        + ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        + f" of {len(shapes)} shapes, {total_macs / 1e9:.1f} GMAC",
        flush=True,
    )
    calls = {key: conv_alone(key, args.repeats, rng) for key in shapes}
    whole()  # traces
    sgemm = make_sgemm()
    alone = {key: float("inf") for key in shapes}
    rounds = []  # (convolutions alone, summed; sgemm around them; the whole; sgemm around it)
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
        whole()
        seconds = time.perf_counter() - start
        peaks.append(sgemm())
        rounds.append((summed, (peaks[-3] + peaks[-2]) / 2, seconds, (peaks[-2] + peaks[-1]) / 2))
    peak = statistics.median(peaks)
    print(f"\nsgemm (float32 2048^2 matmul): {min(peaks):.0f} to {max(peaks):.0f} GFLOP/s, median {peak:.0f}\n")
    print("| count | op | input | kernel | stride | ms in all | GFLOP/s | share of median sgemm |")
    print("|---|---|---|---|---|---|---|---|")
    ranked = sorted(shapes, key=lambda key: -alone[key] * shapes[key])
    for key in ranked[: args.top]:
        rate = 2 * macs[key] / alone[key] / 1e9
        print(
            f"| {shapes[key]} | {key[0]} | {'x'.join(map(str, key[1]))} | {'x'.join(map(str, key[2]))} | "
            f"{key[4][1]} | {1e3 * alone[key] * shapes[key]:.1f} | {rate:.0f} | {100 * rate / peak:.0f} % |"
        )
    rest = ranked[args.top :]
    if rest:
        seconds = sum(alone[key] * shapes[key] for key in rest)
        print(f"| {sum(shapes[key] for key in rest)} | the other {len(rest)} shapes | | | | {1e3 * seconds:.1f} | | |")
    flop = 2 * total_macs / 1e9
    print()
    for name, index in (("the convolutions alone, summed", 0), (whole_name, 2)):
        fastest = min(r[index] for r in rounds)
        shares = [100 * flop / r[index] / r[index + 1] for r in rounds]
        print(
            f"{name}: {fastest:.3f} s (fastest of {args.rounds}), {flop / fastest:.0f} GFLOP/s; share of the sgemm "
            f"around it {statistics.median(shares):.0f} % ({min(shares):.0f}-{max(shares):.0f})"
        )
    ratios = [r[2] / r[0] for r in rounds]
    print(
        f"the whole / its convolutions alone, round by round: {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
