"""One small trained model, exported once to every format, shared by the export tests.

The model is the tiny preset trained briefly on a synthetic COCO split at
128 x 128, good enough that mAP differences between formats mean something.
"""

import os

import keras
import pytest

from keras_gfocal.data import make_synthetic_coco
from keras_gfocal.export import export_model
from keras_gfocal.training.loop import train

IMAGE_SIZE = (128, 128)


@pytest.fixture(scope="session")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def synthetic(export_root):
    return make_synthetic_coco(
        str(export_root / "data"),
        num_train=192,
        num_val=24,
        image_size=IMAGE_SIZE,
        seed=5,
        min_size=20,
    )


@pytest.fixture(scope="session")
def trained(export_root, synthetic):
    """``(model, path of its .keras file)``."""
    keras.utils.set_random_seed(0)
    model, _ = train(
        synthetic["train_ann_file"],
        synthetic["train_image_dir"],
        preset="gfocal_v2_tiny",
        epochs=10,
        batch_size=8,
        image_size=IMAGE_SIZE,
        out=str(export_root / "run"),
        learning_rate=0.01,
        warmup_steps=50,
        seed=0,
        verbose=0,
    )
    return model, os.path.join(str(export_root / "run"), "model.keras")


@pytest.fixture(scope="session")
def exports(export_root, synthetic, trained):
    """Every export of the trained model: name -> path."""
    model, _ = trained
    out = str(export_root / "exports")
    calibration = (synthetic["train_ann_file"], synthetic["train_image_dir"])
    return {
        "saved_model": export_model(model, "saved_model", out),
        "onnx": export_model(model, "onnx", out),
        "tflite_float32": export_model(model, "tflite", out),
        "tflite_float16": export_model(model, "tflite", out, quantize="float16"),
        "tflite_dynamic": export_model(model, "tflite", out, quantize="dynamic"),
        "tflite_int8": export_model(model, "tflite", out, quantize="int8", calibration=calibration, num_calibration=32),
        "tflite_float32_nonms": export_model(model, "tflite", out, nms=False),
        "tflite_float16_nonms": export_model(model, "tflite", out, quantize="float16", nms=False),
    }
