"""ONNX export through tf2onnx, NMS included."""

import keras
import tensorflow as tf

from keras_gfocal.data.input_resize import input_resize
from keras_gfocal.export import graphs
from keras_gfocal.export.metadata import build_metadata, write_metadata


def export_onnx(model, path, opset=17, image_size=None):
    """Writes an ONNX model taking canvas ``pixels [1, Hp, Wp, 3]`` float32
    (see ``graphs``) and returning the detections in canvas pixels.

    Returns:
        ``path``.
    Raises:
        ValueError: tf2onnx left TensorFlow ops in the graph (a Keras grouped
            convolution's XLA call, see ``_check_onnx_ops``); no file is written.
    """
    import tf2onnx

    if opset < 17:
        raise ValueError(f"ONNX opset must be >= 17, got {opset}.")
    # One input shape: a model without a canvas gets the reference's, and the metadata says so.
    resize = input_resize(model, image_size, fixed_canvas=True)
    hp, wp = resize.canvas_size
    spec = (tf.TensorSpec([1, hp, wp, 3], tf.float32, name="pixels"),)

    @tf.function(input_signature=spec)
    def detect(pixels):
        return graphs.detect_on_canvas(model, pixels, nms=True)

    proto, _ = tf2onnx.convert.from_function(detect, input_signature=spec, opset=opset)
    _check_onnx_ops(model, proto)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    write_metadata(
        path,
        build_metadata(
            model,
            resize,
            "onnx",
            opset=opset,
            nms=True,
            input={"name": "pixels", "shape": [1, hp, wp, 3], "dtype": "float32"},
        ),
    )
    return path


def _check_onnx_ops(model, proto):
    """Refuses a graph that still holds TensorFlow ops tf2onnx could not convert.

    tf2onnx logs such ops and writes the file anyway, which onnxruntime then
    refuses to load. The known case is Keras' own grouped convolution
    (``keras.layers.Conv2D(groups > 1)``): Keras' TensorFlow backend runs it as
    an XLA-compiled function, which tf2onnx keeps as a ``StatefulPartitionedCall``;
    ``keras_gfocal.layers.GroupedConv2D`` (what the ResNeXt backbone uses) exports.
    """
    import onnx

    from keras_gfocal.layers import GroupedConv2D

    left = [f"{n.op_type} ({n.name})" for n in proto.graph.node if n.domain == "" and not onnx.defs.has(n.op_type)]
    if not left:
        return
    grouped = [
        x.path
        for x in model._flatten_layers()
        if isinstance(x, keras.layers.Conv2D) and not isinstance(x, GroupedConv2D) and getattr(x, "groups", 1) > 1
    ]
    reason = ""
    if grouped:
        reason = (
            f" The model has {len(grouped)} Keras grouped convolutions (Conv2D with groups > 1, e.g. "
            f"{', '.join(grouped[:3])}): Keras' TensorFlow backend compiles each with XLA, which tf2onnx cannot "
            "convert; keras_gfocal.layers.GroupedConv2D computes the same convolution with plain ones and exports."
        )
    raise ValueError(
        f"ONNX export failed: tf2onnx left {len(left)} TensorFlow ops it could not convert: "
        f"{', '.join(left[:3])}.{reason}"
    )
