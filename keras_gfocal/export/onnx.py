"""ONNX export through tf2onnx, NMS included."""

import tensorflow as tf

from keras_gfocal.data.input_resize import input_resize
from keras_gfocal.export import graphs
from keras_gfocal.export.metadata import build_metadata, write_metadata


def export_onnx(model, path, opset=17, image_size=None):
    """Writes an ONNX model taking canvas ``pixels [1, Hp, Wp, 3]`` float32
    (see ``graphs``) and returning the detections in canvas pixels.

    Returns:
        ``path``.
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

    tf2onnx.convert.from_function(detect, input_signature=spec, opset=opset, output_path=path)
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
