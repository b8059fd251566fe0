"""TFLite files read op by op against the TFLite GPU delegate's rules (``keras_gfocal.export.gpu_delegate``).

The exports of the trained tiny model: the ``--no-nms`` files must run whole on
the GPU; in the files with NMS every refused op must come after the network,
whose convolutions all share the delegated partition. The rules themselves are
checked on small graphs that break each of them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal import GFocalDetector
from keras_gfocal.export import export_model, gpu_delegate
from keras_gfocal.layers import DGQP, GroupNormalization
from keras_gfocal.layers.fpn import upsample_nearest_2x

NO_NMS = ("tflite_float32_nonms", "tflite_float16_nonms")
WITH_NMS = ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8")


def _listing(ops):
    return "\n".join(f"  #{op.index} {op.name}: {op.refused}" for op in ops)


def assert_runs_whole_on_the_gpu(report):
    assert not report.refused, "ops the GPU delegate refuses:\n" + _listing(report.refused)
    assert len(report.partitions) == 1 and not report.on_cpu()


def assert_network_is_one_gpu_partition(report):
    inside = report.refused_before_compute()
    assert not inside, "refused ops that the network's convolutions depend on:\n" + _listing(inside)
    compute = report.compute_ops()
    outside = [report.ops[i].name for i in compute if i not in set(report.delegated)]
    assert compute and not outside, f"convolutions outside the delegated partition: {outside}"


@pytest.mark.parametrize("name", NO_NMS)
def test_no_nms_export_runs_whole_on_the_gpu(exports, name):
    assert_runs_whole_on_the_gpu(gpu_delegate.check(exports[name]))


@pytest.mark.parametrize("name", WITH_NMS)
def test_nms_export_keeps_the_network_in_one_gpu_partition(exports, name):
    report = gpu_delegate.check(exports[name])
    assert_network_is_one_gpu_partition(report)
    # What stays on the CPU is the post-processing.
    assert report.refused_counts()["NON_MAX_SUPPRESSION_V5"] == 1


def test_r50_no_nms_export_runs_whole_on_the_gpu(tmp_path):
    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset("gfocal_v2_r50_fpn", num_classes=2, backbone_weights=None, image_size=(64, 64))
    model.build((None, 64, 64, 3))
    path = export_model(model, "tflite", str(tmp_path), quantize="float16", nms=False)
    report = gpu_delegate.check(path)
    assert_runs_whole_on_the_gpu(report)
    assert sum(report.ops[i].name == "CONV_2D" for i in report.delegated) > 53 + 8 + 10  # ResNet-50, FPN, head


# ------------------------------------------------------------------ the rules


def _tflite(fn, shape, quantize=None):
    """``fn`` on a float32 input of ``shape``, converted as the exports are (weights frozen)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn(tf.zeros(shape))  # builds a layer's weights outside the traced function
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


@pytest.mark.parametrize(
    "fn, shape, op, reason",
    [
        (keras.layers.GroupNormalization(groups=4, epsilon=1e-5), [1, 8, 8, 16], "MEAN", "rank-5"),
        (keras.layers.UpSampling2D(2), [1, 4, 4, 8], "", "rank-5"),
        (lambda x: tf.math.top_k(x, k=4)[0], [1, 10, 4, 17], "TOPK_V2", "no GPU parser"),
        (lambda x: tf.reduce_mean(x, axis=-1, keepdims=True), [1, 10, 4, 17], "MEAN", "axes [3]"),
        (lambda x: tf.reduce_mean(x, axis=[1, 2]), [1, 10, 4], "MEAN", "rank-3"),
        (lambda x: tf.cast(tf.cast(x, tf.int32) * 3, tf.float32), [1, 4, 4, 2], "MUL", "int32 input"),
        (lambda x: x[:, 1], [1, 4, 4, 2], "STRIDED_SLICE", "shrink-axis"),
    ],
)
def test_each_rule_names_the_op_and_why(fn, shape, op, reason):
    report = gpu_delegate.check(_tflite(fn, shape))
    refused = [o for o in report.refused if op in o.name and reason in o.refused]
    assert refused, report.summary()


def test_the_delegate_takes_the_largest_partition():
    # conv -> TOPK_V2 -> conv: two GPU partitions; the delegated one holds one conv.
    k1, k2 = (tf.constant(np.random.default_rng(i).normal(size=(3, 3, 8, 8)).astype("float32")) for i in (0, 1))

    def fn(x):
        y = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        y = tf.math.top_k(y, k=8)[0] + y
        return tf.nn.conv2d(tf.nn.relu(y), k2, 1, "SAME") + tf.reduce_mean(y, axis=[1, 2], keepdims=True)

    report = gpu_delegate.check(_tflite(fn, [1, 8, 8, 8]))
    assert [o.name for o in report.refused] == ["TOPK_V2"]
    assert len(report.partitions) == 2 and len(report.compute_ops()) == 2
    assert sum(i in set(report.delegated) for i in report.compute_ops()) == 1
    assert report.refused_before_compute()[0].name == "TOPK_V2"


def test_float16_weights_are_folded_into_their_convolutions():
    kernel = tf.constant(np.random.default_rng(2).normal(size=(3, 3, 8, 16)).astype("float32"))
    report = gpu_delegate.check(_tflite(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"), [1, 8, 8, 8], "float16"))
    folded = [o.name for o in report.ops if o.folded]
    assert folded and set(folded) == {"DEQUANTIZE"}  # the kernel (and bias) as float16 constants
    assert_runs_whole_on_the_gpu(report)


@pytest.mark.parametrize(
    "fn, shape",
    [
        (GroupNormalization(groups=4, epsilon=1e-5), [1, 8, 8, 16]),
        (GroupNormalization(groups=1, epsilon=1e-5), [1, 8, 8, 16]),
        (upsample_nearest_2x, [1, 4, 4, 8]),
        (DGQP(), [1, 50, 68]),
    ],
)
def test_the_detector_layers_convert_to_accepted_ops(fn, shape):
    for quantize in (None, "float16"):
        assert_runs_whole_on_the_gpu(gpu_delegate.check(_tflite(fn, shape, quantize)))


def test_command_line_report(exports, capsys):
    gpu_delegate.main([exports["tflite_float32"], "--ops"])
    printed = capsys.readouterr().out
    assert "1 x NON_MAX_SUPPRESSION_V5: no GPU parser" in printed
    assert "NON_MAX_SUPPRESSION_V5: no GPU parser for this op" in printed.split("\n", 1)[1]
