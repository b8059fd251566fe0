"""The TensorFlow paths against this CPU's own limit: how much of the same-run sgemm peak
Keras predict, the SavedModel TF Serving runs, the TFLite file and a training step reach.

One run, on a randomly initialised preset (R50 by default), for each canvas and batch size:

* Keras ``predict_on_batch`` (the graph of ``predict``) of the model's inference form, and
  of the model itself (BatchNorm unfolded, the baseline),
  the SavedModel's ``serving_default`` (uint8 images in, resize and NMS inside) through
  ``tf.saved_model.load``, for each ``--precisions`` entry (float32, bfloat16), and the
  float32 TFLite file (LiteRT, XNNPACK; batch 1: its input shape is fixed) and, on the
  first canvas, the full-int8 one;
* once, the TFLite rows' own ceiling: the sgemm's matmuls as a float32 TFLite file, run by
  LiteRT with XNNPACK (its share is XNNPACK's matrix product against TensorFlow's);
* a training step (``train_on_batch``, the reference optimiser) in float32 and under
  Keras' ``mixed_bfloat16`` policy (``--training-policies``).

TensorFlow picks its CPU kernels when it loads: oneDNN's by default on x86, Eigen's with
``TF_ENABLE_ONEDNN_OPTS=0`` in the environment; the first line says which ran.

The multiply-accumulates are counted from the traced graphs (every ``Conv2D``,
``MatMul`` and, for training, ``Conv2DBackpropInput`` / ``Conv2DBackpropFilter`` that the
outputs need), not typed in. The peak is TensorFlow's float32 matmul of 2048 x 2048
matrices, timed before and after each timed call: this machine's speed drifts by half from
minute to minute, so each call is set against the mean of the two sgemms around it. Each row gives
the fastest of ``--rounds`` calls, and its share of peak, 2 x MACs / seconds / sgemm, is
the median of the per-call shares. bfloat16 rows give their share of the float32 peak too
(above 100 % means faster than float32 sgemm).

    python benchmarks/bench_tf_paths.py --help
    python benchmarks/bench_tf_paths.py                      # R50 at 640x640 and 800x1216, batch 1 and 4
    python benchmarks/bench_tf_paths.py --preset gfocal_v2_tiny --sizes 128x128 --rounds 2   # a quick look
"""

import argparse
import os
import statistics
import time

from common import machine_line, random_targets

SGEMM_N = 2048
SGEMM_CHAIN = 4  # matmuls per timed call, chained so none can be skipped
XNNPACK_SGEMM = f"TFLite float32 matmul (XNNPACK's own sgemm, {SGEMM_CHAIN} chained)"


def _size(text):
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def needed_ops(graph):
    """The ops the graph's outputs depend on: what TensorFlow runs (it prunes the rest, such as
    the gradients of frozen layers that the tape also wrote)."""
    stack = [t.op for t in graph.outputs] + list(graph.control_outputs)
    needed = set()
    while stack:
        op = stack.pop()
        if op.name in needed:
            continue
        needed.add(op.name)
        stack += [t.op for t in op.inputs] + list(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in needed]


def op_macs(op):
    """Multiply-accumulates of one op with static shapes: a forward ``Conv2D`` / ``MatMul``, or
    one of the two backward convolutions (each does the forward's sums); 0 for any other op."""
    import numpy as np

    if op.type == "Conv2D":  # output [B, H, W, Cout] x kernel [kh, kw, Cin/groups, Cout]
        kh, kw, cin, _ = op.inputs[1].shape
        return int(np.prod(op.outputs[0].shape)) * kh * kw * cin
    if op.type == "Conv2DBackpropInput":  # (input sizes, kernel, gradient of the output)
        kh, kw, cin, _ = op.inputs[1].shape
        return int(np.prod(op.inputs[2].shape)) * kh * kw * cin
    if op.type == "Conv2DBackpropFilter":  # (input, kernel sizes, gradient of the output)
        kh, kw, cin, _ = op.outputs[0].shape
        return int(np.prod(op.inputs[2].shape)) * kh * kw * cin
    if op.type in ("MatMul", "BatchMatMulV2"):
        a = op.inputs[0].shape
        inner = a[-2] if op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x") else a[-1]
        return int(np.prod(op.outputs[0].shape)) * inner
    return 0


def graph_macs(graph):
    """Multiply-accumulates of the convolutions and matrix products a traced graph runs
    (``op_macs`` over the ops its outputs need, and the functions they call)."""
    macs = 0
    for op in needed_ops(graph):
        macs += op_macs(op)
        for function_name in (
            op.get_attr(attr).name for attr in ("f", "then_branch", "else_branch", "body") if attr in op.node_def.attr
        ):
            function = graph._functions.get(function_name)
            if function is not None:
                macs += graph_macs(function.graph)
    return macs


def make_sgemm():
    """A function that runs ``SGEMM_CHAIN`` float32 2048^2 matmuls; returns GFLOP/s of one call."""
    import tensorflow as tf

    a = tf.random.normal([SGEMM_N, SGEMM_N])
    b = tf.random.normal([SGEMM_N, SGEMM_N]) / SGEMM_N**0.5

    @tf.function
    def chain(x):
        for _ in range(SGEMM_CHAIN):
            x = tf.matmul(x, b)
        return tf.reduce_sum(x)

    chain(a).numpy()

    def run():
        start = time.perf_counter()
        chain(a).numpy()
        return 2 * SGEMM_N**3 * SGEMM_CHAIN / (time.perf_counter() - start) / 1e9

    return run


def timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def timed_against_peak(call, rounds, sgemm, peaks):
    """``(fastest seconds, [(seconds, sgemm GFLOP/s around it)] per round)``: an sgemm is timed
    before each call and after the last one, and each call is set against the mean of the two
    around it (the machine's speed can change within a call). Each sgemm figure is also
    appended to ``peaks``."""
    times, around = [], [sgemm()]
    for _ in range(rounds):
        times.append(timed(call))
        around.append(sgemm())
    peaks += around
    pairs = [(seconds, (before + after) / 2) for seconds, before, after in zip(times, around, around[1:])]
    return min(times), pairs


def forward_macs(model, size):
    import tensorflow as tf

    form = model.inference_form()
    function = tf.function(lambda x: form(x, training=False))
    return graph_macs(function.get_concrete_function(tf.TensorSpec((1,) + size + (3,))).graph)


def gradient_function(model, images, targets):
    """The traced graph of a training step's forward and backward passes (the loss's gradients
    with respect to the trainable weights), for ``images`` and ``targets``' shapes."""
    import tensorflow as tf

    @tf.function
    def gradients(x, boxes, labels):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x, {"boxes": boxes, "labels": labels}, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    spec = [
        tf.TensorSpec(images.shape),
        tf.TensorSpec(targets["boxes"].shape),
        tf.TensorSpec(targets["labels"].shape, tf.int32),
    ]
    return gradients.get_concrete_function(*spec)


def training_macs(model, images, targets):
    return graph_macs(gradient_function(model, images, targets).graph)


def inference_rows(args, size, sgemm, peaks, rng):
    """(path, batch, seconds, MACs per image) for every inference path at one canvas."""
    import keras
    import numpy as np
    import tensorflow as tf
    from bench_tflite_files import interpreter_with_input

    from keras_gfocal import GFocalDetector
    from keras_gfocal.export import export_model

    keras.utils.set_random_seed(args.seed)
    kwargs = {} if "tiny" in args.preset else {"backbone_weights": None}
    model = GFocalDetector.from_preset(args.preset, num_classes=args.num_classes, image_size=size, **kwargs)
    model.build((None,) + size + (3,))
    macs = forward_macs(model, size)
    print(f"{size[0]}x{size[1]}: {macs / 1e9:.1f} GMAC per image (counted from the graph)", flush=True)
    out = os.path.join(args.out, f"{size[0]}x{size[1]}")
    calls = {}  # (path, batch) -> zero-argument call
    form = model.inference_form()
    for batch in args.batches:
        floats = rng.normal(size=(batch,) + size + (3,)).astype("float32")
        calls[("Keras predict", batch)] = lambda x=floats: form.predict_on_batch(x)
        # The baseline: the model as it trains, every BatchNorm a pass of its own.
        calls[("Keras predict, BatchNorm unfolded", batch)] = lambda x=floats: model.predict_on_batch(x)
    for precision in args.precisions:
        kwargs = {} if precision == "float32" else {"precision": precision}
        path = export_model(model, "saved_model", out, name=f"gfocal_{precision}", **kwargs)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        for batch in args.batches:
            pixels = tf.constant(rng.integers(0, 256, (batch,) + size + (3,), dtype=np.uint8))
            calls[(f"SavedModel {precision}", batch)] = lambda s=serve, p=pixels: s(images=p)["num_detections"].numpy()
    quantizations = [None] + (["int8"] if args.int8 and size == args.sizes[0] else [])
    for quantize in quantizations:
        calibration = [rng.uniform(0, 255, size + (3,)).astype("float32") for _ in range(8)]
        path = export_model(model, "tflite", out, quantize=quantize, calibration=calibration, num_calibration=8)
        interpreter, index, canvas = interpreter_with_input(path, args.threads, args.seed)

        def invoke(interpreter=interpreter, index=index, canvas=canvas):
            interpreter.set_tensor(index, canvas)
            interpreter.invoke()

        calls[(f"TFLite {quantize or 'float32'}", 1)] = invoke
    for call in calls.values():  # warm-up: traces, first allocations
        call()
    return [
        (path, batch, *timed_against_peak(call, args.rounds, sgemm, peaks), macs)
        for (path, batch), call in calls.items()
    ]


def xnnpack_sgemm_row(args, sgemm, peaks):
    """The ceiling of the TFLite rows: the sgemm's own ``SGEMM_CHAIN`` 2048^2 products as a
    float32 TFLite file (FULLY_CONNECTED ops), run by LiteRT with XNNPACK like the model's file."""
    import numpy as np
    import tensorflow as tf
    from bench_tflite_files import interpreter_with_input

    weights = np.random.default_rng(args.seed).normal(size=(SGEMM_N, SGEMM_N)).astype("float32") / SGEMM_N**0.5

    @tf.function(input_signature=[tf.TensorSpec([SGEMM_N, SGEMM_N])])
    def chain(x):
        for _ in range(SGEMM_CHAIN):
            x = tf.matmul(x, weights)
        return x

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sgemm.tflite")
    with open(path, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_concrete_functions([chain.get_concrete_function()]).convert())
    interpreter, index, canvas = interpreter_with_input(path, args.threads, args.seed)

    def invoke():
        interpreter.set_tensor(index, canvas)
        interpreter.invoke()

    invoke()
    macs = SGEMM_CHAIN * SGEMM_N**3
    return (f"{SGEMM_N}x{SGEMM_N}", XNNPACK_SGEMM, 1, *timed_against_peak(invoke, args.rounds, sgemm, peaks), macs)


def training_rows(args, sgemm, peaks, rng):
    import keras

    from keras_gfocal import GFocalDetector

    size, batch = args.train_size, args.train_batch
    rows = []
    for policy in args.training_policies:
        keras.config.set_dtype_policy(policy)
        try:
            keras.utils.set_random_seed(args.seed)
            kwargs = {} if "tiny" in args.preset else {"backbone_weights": None}
            model = GFocalDetector.from_preset(args.preset, num_classes=args.num_classes, **kwargs)
            model.build((None,) + size + (3,))
            model.compile()
        finally:
            keras.config.set_dtype_policy("float32")
        images = rng.normal(size=(batch,) + size + (3,)).astype("float32")
        targets = random_targets(rng, batch, size, args.num_classes)
        macs = training_macs(model, images, targets) / batch
        step = lambda m=model, x=images, y=targets: m.train_on_batch(x, y)  # noqa: E731
        step()  # traces the step
        rows.append((f"training step, {policy}", batch, *timed_against_peak(step, args.rounds, sgemm, peaks), macs))
        print(f"training {policy}: {macs / 1e9:.1f} GMAC per image per step (counted from the graph)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gfocal_v2_r50_fpn")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--sizes", type=_size, nargs="+", default=[(640, 640), (800, 1216)], help="HxW canvases")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], help="SavedModel precisions")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the full-int8 TFLite file")
    parser.add_argument("--train-size", type=_size, default=(800, 1216))
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument(
        "--no-xnnpack-sgemm", dest="xnnpack_sgemm", action="store_false", help="skip XNNPACK's own sgemm row"
    )
    parser.add_argument("--no-training", dest="training", action="store_false")
    parser.add_argument(
        "--training-policies", nargs="+", default=["float32", "mixed_bfloat16"], help="Keras dtype policies to train in"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; each figure is the fastest")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="saved_models/bench_tf_paths", help="where the exports are written")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    print(machine_line())
    rng = np.random.default_rng(args.seed)
    sgemm = make_sgemm()
    peaks = []
    rows = []
    for size in args.sizes:
        rows += [(f"{size[0]}x{size[1]}",) + row for row in inference_rows(args, size, sgemm, peaks, rng)]
    if args.xnnpack_sgemm:
        rows.append(xnnpack_sgemm_row(args, sgemm, peaks))
    if args.training:
        size = args.train_size
        rows += [(f"{size[0]}x{size[1]}",) + row for row in training_rows(args, sgemm, peaks, rng)]
    print(
        f"\nsgemm (float32 {SGEMM_N}^2 matmul, {len(peaks)} timed, one before each timed call and one after each row): "
        f"{min(peaks):.0f} to {max(peaks):.0f} GFLOP/s, median {statistics.median(peaks):.0f}"
    )
    print(f"{args.preset}, random weights, {args.num_classes} classes; fastest of {args.rounds} calls\n")
    print("| canvas | path | batch | seconds | images/s | GFLOP/s | share of sgemm peak, median (range) |")
    print("|---|---|---|---|---|---|---|")
    for canvas, path, batch, seconds, pairs, macs in rows:
        flop = 2 * macs * batch / 1e9
        shares = [100 * flop / t / peak for t, peak in pairs]
        print(
            f"| {canvas} | {path} | {batch} | {seconds:.3f} | "
            f"{'—' if path == XNNPACK_SGEMM else f'{batch / seconds:.2f}'} | {flop / seconds:.0f} | "
            f"{statistics.median(shares):.0f} % ({min(shares):.0f}-{max(shares):.0f}) |"
        )


if __name__ == "__main__":
    main()
