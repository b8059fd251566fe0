"""Which ops of a ``.tflite`` file the TFLite GPU delegate would take, and which it refuses.

The delegate decides op by op and, by default, runs only the largest connected
partition of accepted ops; everything else stays on the CPU, with a GPU<->CPU
copy and sync at each boundary. TensorFlow Lite's own
``Analyzer(gpu_compatibility=True)`` applies only one of the delegate's layers
of rules (``CheckGpuDelegateCompatibility``): it passes TOPK_V2, rank-5
tensors and int32 tensors that the delegate refuses. ``check`` applies all of
them, read from the flatbuffer, so that a test can name every refused op and
why.

The rules below are written for this project from the delegate's sources
(LiteRT / TensorFlow Lite, read 2026):

* ``tensorflow/lite/delegates/gpu/common/model_builder.cc``:
  ``NewOperationParser`` (which builtin ops have a parser at all), each
  parser's ``IsSupported`` (largest op version), ``GetOpsToReplace`` /
  ``IsAllAllowedTensors`` (no tensor of rank 5 or more; runtime tensors
  float32/float16, int8/uint8 with the default ``ENABLE_QUANT`` flag, and the
  few per-op exceptions: bool out of comparisons, into SELECT and CAST,
  int32 into GATHER, ONE_HOT and CAST), the comparison ops' "one consumer,
  a CAST or SELECT" rule;
* ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``:
  ``CheckGpuDelegateCompatibility`` (per-op operand counts, constant axes,
  ADD/MUL broadcasting, STRIDED_SLICE masks, SOFTMAX beta, ...);
* ``tensorflow/lite/delegates/gpu/gl/kernels/mean.cc``: MEAN over height and
  width only (the OpenGL backend; older ``MeanOperationParser`` versions
  refused other axes on every backend);
* ``tensorflow/lite/delegates/gpu/delegate.cc``: SPLIT and SPLIT_V excluded
  where OpenCL is missing;
* ``tensorflow/lite/delegates/utils.cc`` (``FP16GraphPartitionHelper``): the
  DEQUANTIZE of a constant float16 weight is folded into its consumer;
* ``tensorflow/lite/graph_info.cc`` (``PartitionGraphIntoIndependentNodeSubsets``,
  greedy): how accepted ops group into partitions; the delegate takes the
  largest (``max_delegated_partitions = 1``).

Where backends differ, the rule here is the strictest, so that a file it
passes runs whole on any of them. Run ``python -m keras_gfocal.export.gpu_delegate
FILE.tflite`` for a report.
"""

import collections
import dataclasses

import numpy as np

# --------------------------------------------------------------------- rules
# One place for the op list: builtin op -> the largest op version its parser
# takes (None: no version check). An op missing here has no parser in
# model_builder.cc's NewOperationParser and is refused whatever its operands.
# QUANTIZE and DEQUANTIZE have parsers only when quantized models are allowed.
# (The delegate also takes four custom ops, transposed convolution, pooling
# with indices, unpooling and Resampler; this project emits none, and they
# are reported refused here.)
MAX_VERSION = {
    "ABS": 2,
    "ADD": 2,
    "ADD_N": 2,
    "AVERAGE_POOL_2D": 2,
    "BATCH_MATMUL": None,
    "CAST": None,
    "CONCATENATION": 2,
    "CONV_2D": 6,
    "COS": 2,
    "CUMSUM": 1,
    "DENSIFY": 1,
    "DEPTHWISE_CONV_2D": 6,
    "DEPTH_TO_SPACE": None,
    "DEQUANTIZE": 3,
    "DIV": 2,
    "ELU": 2,
    "EQUAL": 2,
    "EXP": 2,
    "FLOOR": 2,
    "FLOOR_DIV": 2,
    "FLOOR_MOD": 2,
    "FULLY_CONNECTED": 9,
    "GATHER": 1,
    "GELU": 2,
    "GREATER": 2,
    "GREATER_EQUAL": 2,
    "HARD_SWISH": None,
    "LEAKY_RELU": 2,
    "LESS": 2,
    "LESS_EQUAL": 2,
    "LOG": 2,
    "LOGICAL_AND": 2,
    "LOGISTIC": 2,
    "LSTM": 4,
    "MAXIMUM": 2,
    "MAX_POOL_2D": 2,
    "MEAN": None,
    "MINIMUM": 2,
    "MIRROR_PAD": 2,
    "MUL": 3,
    "NEG": 2,
    "NOT_EQUAL": 2,
    "ONE_HOT": 1,
    "PACK": None,
    "PAD": 2,
    "PADV2": 2,
    "POW": 2,
    "PRELU": 1,
    "QUANTIZE": 2,
    "REDUCE_MAX": None,
    "REDUCE_MIN": None,
    "REDUCE_PROD": None,
    "RELU": 2,
    "RELU6": 2,
    "RELU_0_TO_1": 2,
    "RELU_N1_TO_1": 2,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 3,
    "RESIZE_NEAREST_NEIGHBOR": 3,
    "RSQRT": 2,
    "SELECT": 1,
    "SELECT_V2": 1,
    "SIGN": 2,
    "SIN": 2,
    "SLICE": 2,
    "SOFTMAX": 2,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": None,
    "SPLIT_V": None,
    "SQRT": 2,
    "SQUARE": 2,
    "SQUARED_DIFFERENCE": 2,
    "STRIDED_SLICE": 4,
    "SUB": 2,
    "SUM": None,
    "TANH": 2,
    "TILE": None,
    "TRANSPOSE": 4,
    "TRANSPOSE_CONV": 3,
    "UNPACK": None,
}
QUANT_OPS = ("QUANTIZE", "DEQUANTIZE")
# Refused where the device has no OpenCL (delegate.cc); refused here everywhere.
NEEDS_OPENCL = ("SPLIT", "SPLIT_V")
ONE_OPERAND = {
    "ABS",
    "COS",
    "ELU",
    "EXP",
    "FLOOR",
    "GELU",
    "LOG",
    "LOGISTIC",
    "NEG",
    "RSQRT",
    "SIGN",
    "SIN",
    "SQRT",
    "SQUARE",
    "TANH",
}
TWO_OPERANDS = {
    "DIV",
    "EQUAL",
    "FLOOR_DIV",
    "FLOOR_MOD",
    "GREATER",
    "GREATER_EQUAL",
    "LESS",
    "LESS_EQUAL",
    "LOGICAL_AND",
    "MAXIMUM",
    "MINIMUM",
    "NOT_EQUAL",
    "POW",
    "SQUARED_DIFFERENCE",
    "SUB",
}
COMPARISONS = {"EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL"}
# Fused activations the delegate builds (model_builder.cc MaybeFuseActivation).
FUSABLE_ACTIVATIONS = {"NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH"}
# The ops that carry the network's arithmetic: all must share the GPU partition.
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


@dataclasses.dataclass
class Op:
    """One operator of the file, in execution order."""

    index: int
    name: str
    version: int
    inputs: list
    outputs: list
    refused: str = ""  # why the delegate refuses it; empty when accepted
    folded: bool = False  # a float16 weight's DEQUANTIZE, folded into its consumer


@dataclasses.dataclass
class Report:
    """What the GPU delegate does with one ``.tflite`` file."""

    ops: list
    partitions: list  # lists of op indices accepted together, largest first
    delegated: list  # the op indices the delegate takes (its largest partition)

    @property
    def refused(self):
        return [op for op in self.ops if op.refused]

    def refused_counts(self):
        return collections.Counter(op.name for op in self.refused)

    def compute_ops(self):
        return [op.index for op in self.ops if op.name in COMPUTE_OPS]

    def on_cpu(self):
        """Ops that would run on the CPU (refused, or accepted but outside the delegated partition)."""
        taken = set(self.delegated)
        return [op for op in self.ops if op.index not in taken and not op.folded]

    def refused_before_compute(self):
        """Refused ops that a convolution or fully connected op depends on."""
        producer = {t: op.index for op in self.ops for t in op.outputs}
        ancestors = set()
        stack = self.compute_ops()
        while stack:
            i = stack.pop()
            for t in self.ops[i].inputs:
                j = producer.get(t)
                if j is not None and j not in ancestors:
                    ancestors.add(j)
                    stack.append(j)
        return [op for op in self.refused if op.index in ancestors]

    def summary(self):
        counted = [op for op in self.ops if not op.folded]
        compute = self.compute_ops()
        taken = {i for i in self.delegated if not self.ops[i].folded}
        lines = [
            f"{len(counted)} ops, {len(self.refused)} refused; {len(self.partitions)} GPU partition(s), the delegated "
            f"one holds {len(taken)} ops and {sum(i in taken for i in compute)} of {len(compute)} "
            f"convolution / fully connected ops; {len(self.on_cpu())} ops run on the CPU",
        ]
        reasons = collections.Counter((op.name, op.refused) for op in self.refused)
        for (name, why), n in sorted(reasons.items()):
            lines.append(f"  refused {n} x {name}: {why}")
        return "\n".join(lines)


def check(tflite, allow_quantized=True):
    """Applies the GPU delegate's rules to every op of a ``.tflite`` file.

    Args:
        tflite: a path, or the file's bytes.
        allow_quantized: the delegate's ``ENABLE_QUANT`` flag (on by default):
            int8/uint8 tensors and QUANTIZE/DEQUANTIZE are accepted.
    Returns:
        a ``Report``.
    """
    model = _Model(tflite)
    ops = [model.op(i) for i in range(len(model.graph.operators))]
    consumers = collections.defaultdict(list)
    for op in ops:
        for t in op.inputs:
            consumers[t].append(op)
    # float16 weights: DEQUANTIZE of a constant float16 tensor; its consumers see the constant.
    fp16_weights = {}
    for op in ops:
        if op.name == "DEQUANTIZE" and model.is_const(op.inputs[0]) and model.dtype(op.inputs[0]) == "FLOAT16":
            op.folded = True
            fp16_weights[op.outputs[0]] = op.inputs[0]
    for op in ops:
        if not op.folded:
            op.refused = _refusal(model, op, consumers, fp16_weights, allow_quantized)
    partitions = _partition(model, ops)
    accepted = sorted(partitions, key=len, reverse=True)
    if all(op.folded or not op.refused for op in ops):
        delegated = [op.index for op in ops]  # FP16GraphPartitionHelper: full delegation
    else:
        delegated = list(accepted[0]) if accepted else []
    return Report(ops=ops, partitions=accepted, delegated=sorted(delegated))


class _Model:
    """The flatbuffer's first subgraph, with names for its enums."""

    def __init__(self, tflite):
        from ai_edge_litert import schema_py_generated as schema

        data = tflite if isinstance(tflite, (bytes, bytearray)) else open(tflite, "rb").read()
        self.model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        self.graph = self.model.subgraphs[0]
        self.op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.activations = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}

    def op(self, i):
        operator = self.graph.operators[i]
        code = self.model.operatorCodes[operator.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.customCode.decode() if code.customCode else ''}"
        ins = [int(t) for t in (operator.inputs if operator.inputs is not None else [])]
        outs = [int(t) for t in (operator.outputs if operator.outputs is not None else [])]
        op = Op(index=i, name=name, version=code.version, inputs=[t for t in ins if t >= 0], outputs=outs)
        op.options = operator.builtinOptions
        return op

    def tensor(self, t):
        return self.graph.tensors[t]

    def is_const(self, t):
        tensor = self.tensor(t)
        if tensor.buffer <= 0 or tensor.isVariable:
            return False
        buffer = self.model.buffers[tensor.buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or buffer.offset > 1

    def dtype(self, t):
        return self.type_names[self.tensor(t).type]

    def shape(self, t):
        shape = self.tensor(t).shape
        return [] if shape is None else [int(d) for d in shape]

    def const_ints(self, t):
        tensor = self.tensor(t)
        buffer = self.model.buffers[tensor.buffer]
        dtype = {"INT32": np.int32, "INT64": np.int64}[self.dtype(t)]
        return np.frombuffer(bytes(buffer.data), dtype).tolist()

    def activation(self, op):
        code = getattr(op.options, "fusedActivationFunction", 0)
        return self.activations.get(code, str(code))


def _refusal(model, op, consumers, fp16_weights, allow_quantized):
    """Why the delegate refuses ``op`` ("" if it takes it)."""
    name = op.name
    if name in QUANT_OPS and not allow_quantized:
        return "no parser unless quantized models are allowed"
    if name not in MAX_VERSION:
        return "no GPU parser for this op (model_builder.cc NewOperationParser)"
    if name in NEEDS_OPENCL:
        return "excluded without OpenCL (delegate.cc): not on OpenGL-only GPUs"
    limit = MAX_VERSION[name]
    if limit is not None and op.version > limit:
        return f"op version {op.version} > {limit}"
    inputs = [fp16_weights.get(t, t) for t in op.inputs]
    why = _tensor_rule(model, op, inputs, allow_quantized)
    if why:
        return why
    return _op_rule(model, op, inputs, consumers)


def _tensor_rule(model, op, inputs, allow_quantized):
    """IsAllAllowedTensors: rank <= 4 for every operand, float runtime tensors."""
    allowed_in, allowed_out = {"FLOAT32", "FLOAT16"}, {"FLOAT32", "FLOAT16"}
    if allow_quantized:
        allowed_in |= {"INT8", "UINT8"}
        allowed_out |= {"INT8", "UINT8"}
    if op.name in COMPARISONS:
        allowed_out.add("BOOL")
    if op.name == "CAST":
        allowed_in |= {"BOOL", "INT32"}
        allowed_out |= {"INT32", "BOOL"}
    if op.name in ("ONE_HOT", "GATHER"):
        allowed_in.add("INT32")
    if op.name in ("SELECT", "SELECT_V2"):
        allowed_in.add("BOOL")
    if op.name == "LOGICAL_AND":
        allowed_in.add("BOOL")
        allowed_out.add("BOOL")
    for kind, tensors, allowed in (("input", inputs, allowed_in), ("output", op.outputs, allowed_out)):
        for t in tensors:
            rank = len(model.shape(t))
            if rank >= 5:
                return f"rank-{rank} {kind} {model.shape(t)} (the delegate handles rank <= 4)"
            if not model.is_const(t) and model.dtype(t) not in allowed:
                return f"{model.dtype(t).lower()} {kind} tensor (runtime tensors must be float)"
    return ""


def _op_rule(model, op, inputs, consumers):
    """The per-op parts of IsSupported / CheckGpuDelegateCompatibility that this project can meet."""
    name = op.name
    runtime = [t for t in inputs if not model.is_const(t)]
    const = [t for t in inputs if model.is_const(t)]
    activation = model.activation(op) if hasattr(op.options, "fusedActivationFunction") else "NONE"
    if activation not in FUSABLE_ACTIVATIONS:
        return f"fused {activation} activation"
    if name in ONE_OPERAND and (len(runtime) != 1 or const):
        return "needs exactly one runtime operand"
    if name in TWO_OPERANDS | {"ADD", "MUL"} and not (
        len(runtime) == 2 and not const or len(runtime) == 1 and len(const) == 1
    ):
        return "needs two operands, at most one constant"
    if name in ("ADD", "MUL"):
        a, b = (model.shape(t) for t in inputs[:2])
        if len(a) > 1 and len(b) > 1 and len(a) != len(b) and not _standard_broadcast(a, b):
            return f"broadcast of {a} with {b}"
    if name in COMPARISONS:
        users = consumers.get(op.outputs[0], [])
        if (
            len(users) != 1
            or users[0].name not in ("CAST", "SELECT", "SELECT_V2")
            or model.dtype(users[0].outputs[0]) not in ("FLOAT32", "FLOAT16")
        ):
            return "a comparison must feed exactly one CAST or SELECT with a float result"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        if len(runtime) != 1 or len(const) != 1 or model.dtype(const[0]) != "INT32":
            return "axes must be one constant int32 tensor"
        if name == "MEAN":
            rank = len(model.shape(inputs[0]))
            axes = {a % rank for a in model.const_ints(inputs[1])} if rank else set()
            if rank != 4 or axes != {1, 2}:
                return (
                    f"MEAN over axes {sorted(axes)} of a rank-{rank} tensor (only height and width of a "
                    "rank-4 tensor: gl/kernels/mean.cc)"
                )
    if name == "SOFTMAX" and getattr(op.options, "beta", 1.0) != 1.0:
        return "softmax beta != 1"
    if name in ("STRIDED_SLICE", "SLICE"):
        rank = len(model.shape(inputs[0]))
        if rank not in (3, 4):
            return f"{name} of a rank-{rank} tensor (3 or 4 only)"
        if name == "STRIDED_SLICE":
            o = op.options
            if o.ellipsisMask or o.newAxisMask or o.shrinkAxisMask:
                return "STRIDED_SLICE with an ellipsis, new-axis or shrink-axis mask"
            if len(inputs) < 4 or any(not model.is_const(t) for t in inputs[1:4]):
                return "STRIDED_SLICE needs constant begin, end and strides"
            if any(s <= 0 for s in model.const_ints(inputs[3])):
                return "STRIDED_SLICE with a reverse stride"
        # The parsers read begin (and size or end) as 3 or 4 values, one per axis.
        if len(inputs) < 3 or not model.is_const(inputs[1]) or len(model.const_ints(inputs[1])) != rank:
            return f"{name} needs constant begin values, one per axis"
    if (
        name
        in (
            "RESHAPE",
            "TRANSPOSE",
            "TILE",
            "PAD",
            "PADV2",
            "RESIZE_BILINEAR",
            "RESIZE_NEAREST_NEIGHBOR",
            "DEPTH_TO_SPACE",
            "SPACE_TO_DEPTH",
        )
        and len(runtime) != 1
    ):
        return "needs exactly one runtime input"
    if name in ("PAD", "PADV2") and model.shape(inputs[1]) not in ([3, 2], [4, 2]):
        return "paddings must be 3x2 or 4x2"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and len(runtime) not in (1, 2):
        return "needs one or two runtime inputs"
    if name == "FULLY_CONNECTED":
        if getattr(op.options, "weightsFormat", 0) != 0:
            return "shuffled FULLY_CONNECTED weights"
        if model.is_const(inputs[0]) or len(runtime) > 2:
            return "FULLY_CONNECTED needs a runtime input and at most two runtime operands"
        if op.options.keepNumDims and len(model.shape(inputs[0])) != len(model.shape(op.outputs[0])):
            return "keep_num_dims with a rank change"
    if name == "GATHER" and (len(model.shape(inputs[1])) != 1 or model.dtype(inputs[1]) != "INT32"):
        return "GATHER needs 1-D int32 indices"
    return ""


def _standard_broadcast(a, b):
    """ADD/MUL operands of different ranks the delegate takes (gpu_compatibility.cc, standard flags)."""
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    if len(longer) == 4 and len(shorter) == 3 and longer[0] == 1:
        return True
    if len(longer) == 4 and len(shorter) == 2 and longer[0] == 1 and shorter == [1, 1]:
        return True
    return len(longer) == 4 and len(shorter) == 2 and longer[0] == shorter[0] and longer[3] == shorter[1]


def _partition(model, ops):
    """Accepted ops grouped as TFLite groups them (graph_info.cc, greedy): lists of op indices.

    Each round takes, in execution order and again until nothing changes,
    every op whose inputs are ready and whose kind (accepted or not) is the
    round's; the first ready op sets the kind. The rounds of accepted ops are
    the delegate's candidate partitions.
    """
    produced = {t for op in ops for t in op.outputs}
    ready = set()  # tensors computed so far; constants and model inputs always are
    done = [False] * len(ops)
    partitions = []
    while not all(done):
        kind, members = None, []
        progress = True
        while progress:
            progress = False
            for op in ops:
                if done[op.index] or any(t in produced and t not in ready for t in op.inputs):
                    continue
                accepted = not op.refused and not op.folded
                if kind is None:
                    kind = accepted
                if accepted != kind:
                    continue
                done[op.index] = True
                members.append(op.index)
                ready.update(op.outputs)
                progress = True
        if not members:
            raise ValueError("The graph has a cycle or an input that is never produced.")
        if kind:
            partitions.append(members)
    return partitions


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help=".tflite files")
    parser.add_argument("--ops", action="store_true", help="list every refused op")
    args = parser.parse_args(argv)
    for path in args.files:
        report = check(path)
        print(f"{path}: {report.summary()}")
        if args.ops:
            for op in report.refused:
                print(f"    #{op.index} {op.name}: {op.refused}")


if __name__ == "__main__":
    main()
