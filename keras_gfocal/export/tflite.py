"""TFLite export: float32, float16, dynamic-range int8, full int8; built-in ops only.

The input is the canvas (see ``graphs``): ``pixels [1, Hp, Wp, 3]`` float32 RGB
0..255 (uint8 for full int8), resized and padded on the host. With NMS the
outputs are the detections in canvas pixels; with ``nms=False`` the file has
static shapes only and returns the raw head outputs for
``keras_gfocal.export.numpy_postprocess.postprocess``.

The network itself is built from ops the TFLite GPU delegate takes (rank-4
GroupNorm, a MAXIMUM/MINIMUM top-k in the DGQP, no rank-5 upsampling): a
``nms=False`` file runs whole on a phone's GPU, and in a file with NMS every
op the delegate refuses comes after the network, so the network is one GPU
partition. ``keras_gfocal.export.gpu_delegate.check`` reads a file and says so.
"""

import re

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert as tflite_convert
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from tqdm.auto import tqdm

from keras_gfocal.constants import TFLITE_QUANTIZATIONS as QUANTIZATIONS
from keras_gfocal.data.input_resize import input_resize
from keras_gfocal.export import graphs
from keras_gfocal.export.metadata import build_metadata, write_metadata
from keras_gfocal.layers.dgqp import DGQP
from keras_gfocal.layers.dgqp import STATISTICS_SCOPE as DISTRIBUTION_STATISTICS
from keras_gfocal.layers.gfl_head import JOINT_SCORE_SCOPE, GFLHead
from keras_gfocal.layers.group_norm import STATISTICS_SCOPE as GROUP_NORM_STATISTICS
from keras_gfocal.layers.group_norm import GroupNormalization


def calibration_images(ann, images, image_size, count=100):
    """Canvas images from a COCO-format dataset for full-int8 calibration."""
    from keras_gfocal.data import CocoDataset
    from keras_gfocal.image import read_image

    dataset = CocoDataset(ann, images, skip_bad_images=True)
    ids = list(dataset.image_ids)[:count]
    for image_id in tqdm(ids, desc="calibrate", unit="image", leave=False):
        image = read_image(dataset.image_path(image_id))
        yield graphs.canvas_from_image(image, image_size)[0]


def export_tflite(model, path, quantize=None, nms=True, image_size=None, calibration=None, num_calibration=100):
    """Converts ``model`` to a ``.tflite`` file and writes its metadata beside it.

    Args:
        model: a ``GFocalDetector``.
        path: output file.
        quantize: None (float32), ``"float16"``, ``"dynamic"`` (int8 weights),
            or ``"int8"`` (int8 weights and activations, uint8 input).
        nms: keep decoding and NMS inside; False gives raw outputs and static shapes.
        calibration: for ``"int8"``: ``(ann_json, image_dir)`` of a COCO-format
            dataset, or an iterable of canvas images ``[Hp, Wp, 3]``.
    Returns:
        ``path``.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown TFLite quantization {quantize!r}; use one of {QUANTIZATIONS}.")
    if quantize == "int8" and calibration is None:
        raise ValueError(
            "Full int8 needs calibration images: pass calibration=(ann_json, image_dir) "
            "(gfocal export --calibration-ann A --calibration-images DIR)."
        )
    # One input shape: a model without a canvas gets the reference's, and the metadata says so.
    resize = input_resize(model, image_size, fixed_canvas=True)
    image_size = resize.image_size
    hp, wp = resize.canvas_size

    @tf.function(input_signature=[tf.TensorSpec([1, hp, wp, 3], tf.float32, name="pixels")])
    def detect(pixels):
        return graphs.detect_on_canvas(model, pixels, nms=nms)

    # Weights become constants: left as resource variables, neither
    # quantisation nor GPU delegates would see them.
    concrete = detect.get_concrete_function()
    # The file names its outputs output_0, output_1, ... in this order.
    output_names = sorted(concrete.structured_outputs)
    frozen = convert_variables_to_constants_v2(concrete)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    tflite_bytes = _convert(model, converter, quantize, calibration, image_size, num_calibration, nms)
    with open(path, "wb") as f:
        f.write(tflite_bytes)
    write_metadata(
        path,
        build_metadata(
            model,
            resize,
            "tflite",
            quantization=quantize or "float32",
            nms=bool(nms),
            outputs=output_names,
            input={"name": "pixels", "shape": [1, hp, wp, 3], "dtype": _input_dtype(tflite_bytes)},
        ),
    )
    return path


def _input_dtype(tflite_bytes):
    from ai_edge_litert.interpreter import Interpreter

    return np.dtype(Interpreter(model_content=tflite_bytes).get_input_details()[0]["dtype"]).name


def _convert(model, converter, quantize, calibration, image_size, num_calibration, nms):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        if isinstance(calibration, tuple) and len(calibration) == 2 and isinstance(calibration[0], str):
            calibration = list(calibration_images(*calibration, image_size=image_size, count=num_calibration))
        samples = [np.asarray(c, np.float32)[None] for c in calibration]
        if not samples:
            raise ValueError("The calibration set has no readable images.")
        float_nodes = _float_tensor_names(model, _tensors(converter.convert()), nms)  # names quantization sees

        def representative():
            for sample in samples:
                yield [sample]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # int8 kernels wherever they exist, float built-ins elsewhere.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.inference_input_type = tf.uint8
        # Kept float, still built-in ops: decoding and NMS (box coordinates,
        # the distributions' softmax and the scores that rank NMS lose too
        # much in 8 bits), the GroupNorm statistics (a mean and variance
        # over a whole group do not fit one int8 scale; the normalisation they
        # apply stays int8) and the DGQP's softmax and top-k (the compare-
        # exchange network's MAXIMUM/MINIMUM/slices must all share one int8
        # scale, which the quantizer cannot arrange against the softmax's
        # fixed one). On the demo model this halves the int8 mAP loss; see
        # the README's export table.
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative, debug_options=options
        )
        # The debugger's own get_nondebug_quantized_model() quantizes with the
        # same call but without the input type, leaving a float32 input; the
        # calibrated model quantized here takes uint8 pixels as promised.
        return tflite_convert.mlir_quantize(
            debugger.calibrated_model,
            input_data_type=tf.uint8,
            output_data_type=tf.float32,
            denylisted_nodes=float_nodes,
        )
    return converter.convert()


#: Layer types whose ops under a name scope of their own stay float in full
#: int8, and that scope.
_FLOAT_SCOPE_BY_LAYER_TYPE = (
    (GroupNormalization, GROUP_NORM_STATISTICS),
    (DGQP, DISTRIBUTION_STATISTICS),
    (GFLHead, JOINT_SCORE_SCOPE),
)


def _float_tensor_names(model, tensors, nms):
    """Names of the tensors whose ops full-int8 conversion leaves in float.

    Found by the types of ``model``'s layers: the scopes of
    ``_FLOAT_SCOPE_BY_LAYER_TYPE`` and, for Keras' own ``GroupNormalization``
    (a user's backbone may hold one), the ops of its ``tf.nn.moments`` and the
    per-group / per-channel scale and shift (outputs ``[B, 1, 1, G, ...]``),
    not the full-size maps they are applied to.

    Args:
        model: the ``GFocalDetector`` being converted.
        tensors: ``(name, shape)`` of every tensor of its float TFLite file.
        nms: whether decoding and NMS are inside (they stay float).
    Returns:
        A list of tensor names.
    """
    layers = list(model._flatten_layers())
    scopes = {scope for kind, scope in _FLOAT_SCOPE_BY_LAYER_TYPE if any(isinstance(x, kind) for x in layers)}
    if nms:
        scopes.add(graphs.POSTPROCESS_SCOPE)
    # A layer's scope in the graph is its name, with a call count after the first call.
    keras_group_norms = [
        re.compile(rf"(^|/){re.escape(x.name)}(_\d+)?/")
        for x in layers
        if isinstance(x, keras.layers.GroupNormalization)
    ]

    def keep(name, shape):
        if any(f"/{scope}/" in f"/{name}" for scope in scopes):
            return True
        in_group_norm = any(pattern.search(name) for pattern in keras_group_norms)
        statistic = "/moments/" in name or (len(shape) == 5 and shape[1] == 1 and shape[2] == 1)
        return in_group_norm and statistic

    return [name for name, shape in tensors if keep(name, shape)]


def _tensors(tflite_bytes):
    from ai_edge_litert.interpreter import Interpreter

    return [(t["name"], list(t["shape"])) for t in Interpreter(model_content=tflite_bytes).get_tensor_details()]


def tflite_op_names(path):
    """The operator names used by a ``.tflite`` file (Flex ops show as ``Flex...``)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})
