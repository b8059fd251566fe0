"""CPU time of ``DeformableConv2D`` against ``torchvision.ops.deform_conv2d`` on one shape.

Times the Keras layer (offset conv included) in graph mode and under XLA, and, where PyTorch
and torchvision import, the same computation in PyTorch (the offset ``nn.Conv2d`` followed by
``torchvision.ops.deform_conv2d``, as mmcv's ``DeformConv2dPack``); both at ``--threads``
threads, on the same seeded input and weights, with offsets of about a pixel. Prints the
median seconds of one call and the ratio. Where TensorFlow and PyTorch live in different
environments, run it in each and compare::

    python benchmarks/bench_deform_conv.py                      # Keras half (and torch if importable)
    /tmp/refenv/bin/python benchmarks/bench_deform_conv.py      # torch half in the reference environment

The default shape is a ResNet-50 C4 3x3 conv at 800x1344 input: 1x50x84x256 -> 256, stride 1.
"""

import argparse
import os
import statistics
import time

import numpy as np


def _median_seconds(fn, repeats):
    fn()  # warm-up: tracing, compilation, allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _weights(channels, filters, kernel_size, seed=0):
    """Seeded input-independent weights, PyTorch layouts: offset conv ``[18, C, k, k]`` and bias, kernel."""
    rng = np.random.default_rng(seed)
    fan_in = channels * kernel_size * kernel_size
    offset_weight = rng.normal(0.0, np.sqrt(1.0 / fan_in), (2 * kernel_size**2, channels, kernel_size, kernel_size))
    offset_bias = rng.normal(0.0, 0.1, (2 * kernel_size**2,))
    kernel = rng.normal(0.0, np.sqrt(2.0 / fan_in), (filters, channels, kernel_size, kernel_size))
    return [np.asarray(w, np.float32) for w in (offset_weight, offset_bias, kernel)]


def time_keras(image, weights, args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from common import machine_line

    from keras_gfocal.layers import DeformableConv2D

    print(machine_line())
    offset_weight, offset_bias, kernel = weights
    layer = DeformableConv2D(args.filters, kernel_size=args.kernel_size, strides=args.strides)
    layer.build(image.shape)
    layer.conv_offset.set_weights([offset_weight.transpose(2, 3, 1, 0), offset_bias])
    layer.kernel.assign(kernel.transpose(2, 3, 1, 0))
    x = tf.constant(image)
    results = {}
    for label, jit in (("Keras graph", False), ("Keras XLA", True)):
        fn = tf.function(layer, jit_compile=jit)
        results[label] = _median_seconds(lambda fn=fn: fn(x).numpy(), args.repeats)
    return results


def time_torch(image, weights, args):
    import torch
    from torchvision.ops import deform_conv2d

    torch.set_num_threads(args.threads)
    offset_weight, offset_bias, kernel = (torch.from_numpy(w) for w in weights)
    padding = (args.kernel_size - 1) // 2
    x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())

    def run():
        with torch.no_grad():
            offset = torch.nn.functional.conv2d(x, offset_weight, offset_bias, stride=args.strides, padding=padding)
            return deform_conv2d(x, offset, kernel, stride=args.strides, padding=padding)

    from common import cpu_name

    print(f"{time.strftime('%Y-%m-%d')} | {cpu_name()} | {os.cpu_count()} cores | torch {torch.__version__}")
    return {"torchvision": _median_seconds(run, args.repeats)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 50, 84, 256], metavar=("B", "H", "W", "C"))
    parser.add_argument("--filters", type=int, default=256)
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--strides", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    image = np.random.default_rng(1).standard_normal(args.shape).astype(np.float32)
    weights = _weights(args.shape[3], args.filters, args.kernel_size)
    print(f"input {args.shape} -> {args.filters} filters, {args.kernel_size}x{args.kernel_size}, stride {args.strides}")
    results = {}
    for half in (time_keras, time_torch):
        try:
            results.update(half(image, weights, args))
        except ImportError as error:
            print(f"{half.__name__}: skipped ({error})")
    for label, seconds in results.items():
        ratio = f"  ({seconds / results['torchvision']:.2f}x torchvision)" if "torchvision" in results else ""
        print(f"{label:12s} {seconds:.3f} s{ratio}")


if __name__ == "__main__":
    main()
