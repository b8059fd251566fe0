"""The metadata file written next to every exported model.

It says what a program needs to run the model without the Keras object: class
names and dataset ids, the input contract, pre-processing, post-processing
settings, the format, the precision the network computes in, and the package
version.
"""

import json
import os

from keras_gfocal.image import MEAN, STD
from keras_gfocal.postprocess import DETECTIONS
from keras_gfocal.precision import model_precision

METADATA_NAME = "gfocal_metadata.json"


def build_metadata(model, resize, export_format, **extra):
    """Metadata dict for ``model`` run with ``resize``, a
    ``keras_gfocal.data.input_resize.InputResize`` (its ``metadata()``: the canvas or
    the test resize, and how images are resized and padded). ``"precision"``
    is what ``model``'s network computes in (``keras_gfocal.precision``:
    ``"float32"``, or ``"bfloat16"`` / ``"float16"`` for a ``with_precision``
    model; its decoding and NMS are float32 in every case)."""
    from keras_gfocal import __version__

    num_classes = int(model.num_classes)
    contract = resize.metadata()
    contract["preprocessing"].update(mean_rgb=list(MEAN), std_rgb=list(STD))
    return {
        "format": export_format,
        "keras_gfocal_version": __version__,
        "precision": model_precision(model),
        "architecture": "GFocalV2" if model.dgqp else "GFocalV1",
        "num_classes": num_classes,
        "class_names": list(model.class_names or [str(i) for i in range(num_classes)]),
        "category_ids": list(model.category_ids or range(num_classes)),
        **contract,
        "postprocessing": {
            "strides": list(model.strides),
            "reg_max": int(model.reg_max),
            "pre_nms_top_k": int(model.pre_nms_top_k),
            "score_threshold": float(model.score_threshold),
            "iou_threshold": float(model.iou_threshold),
            "max_detections": int(model.max_detections),
        },
        # What each detection output holds: the same names in every format.
        "detections": dict(DETECTIONS),
        **extra,
    }


def metadata_path(model_path):
    """Where the metadata of an exported model lives: inside a SavedModel folder,
    else ``<file>.json`` beside a file."""
    if os.path.isdir(model_path):
        return os.path.join(model_path, METADATA_NAME)
    return model_path + ".json"


def write_metadata(model_path, metadata):
    path = metadata_path(model_path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
    return path


def read_metadata(model_path):
    path = metadata_path(model_path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No metadata for exported model {model_path} (expected {path}); export it with `gfocal export`."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)
