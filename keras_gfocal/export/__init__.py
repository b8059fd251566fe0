"""Exports for serving and edge devices, and one loader over every format.

* ``export_saved_model``: TF Serving layout, uint8 images or encoded bytes in;
  float32, bfloat16 or float16 compute.
* ``export_tflite``: float32 / float16 / dynamic / int8, NMS inside or not.
* ``export_onnx``: tf2onnx, NMS inside.
* ``export_model``: any of them by name (what ``gfocal export`` calls).
* ``load_detector``: ``.keras``, SavedModel, ``.tflite`` or ``.onnx`` behind one
  ``detect(image)``.
"""

import os

from keras_gfocal.constants import EXPORT_FORMATS as FORMATS
from keras_gfocal.constants import PRECISIONS
from keras_gfocal.export.metadata import read_metadata
from keras_gfocal.export.onnx import export_onnx
from keras_gfocal.export.runtime import ModelFileError, load_detector
from keras_gfocal.export.saved_model import export_saved_model
from keras_gfocal.export.tflite import export_tflite, tflite_op_names
from keras_gfocal.precision import check_precision


def disk_size(path):
    """Bytes on disk of an exported file, or of a SavedModel folder and everything in it."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def export_model(
    model,
    export_format,
    out,
    quantize=None,
    nms=True,
    calibration=None,
    name="gfocal",
    version=1,
    image_size=None,
    num_calibration=100,
    precision="float32",
):
    """Exports ``model`` to ``out`` (a folder) and returns the written path.

    ``quantize`` and ``nms`` apply to TFLite only and are ignored otherwise;
    ``precision`` (``PRECISIONS``: ``"float32"``, ``"bfloat16"``, ``"float16"``,
    what the network computes in) applies to SavedModel only, and any other
    format raises ValueError unless it is ``"float32"``;
    ``calibration=(ann_json, image_dir)`` is needed for ``quantize="int8"``;
    ``image_size`` defaults to the model's training size.
    File names: ``out/name/version/`` (SavedModel), ``out/name[_quant][_nonms].tflite``,
    ``out/name.onnx``.
    """
    if export_format not in FORMATS:
        raise ValueError(f"Unknown export format {export_format!r}; use one of {FORMATS}.")
    check_precision(precision)
    if export_format != "saved_model" and precision != "float32":
        raise ValueError(
            f"precision={precision!r} applies to the saved_model format only; {export_format} exports compute "
            "in float32 (for a float16 TFLite file, use quantize='float16')."
        )
    os.makedirs(out, exist_ok=True)
    if export_format == "saved_model":
        return export_saved_model(model, out, name=name, version=version, image_size=image_size, precision=precision)
    if export_format == "onnx":
        return export_onnx(model, os.path.join(out, name + ".onnx"), image_size=image_size)
    stem = name + (f"_{quantize}" if quantize else "_float32") + ("" if nms else "_nonms")
    return export_tflite(
        model,
        os.path.join(out, stem + ".tflite"),
        quantize=quantize,
        nms=nms,
        image_size=image_size,
        calibration=calibration,
        num_calibration=num_calibration,
    )


__all__ = [
    "FORMATS",
    "PRECISIONS",
    "disk_size",
    "export_model",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "ModelFileError",
    "load_detector",
    "read_metadata",
    "tflite_op_names",
]
