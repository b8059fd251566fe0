"""Full-int8 TFLite: the file really runs integer kernels on a uint8 input, and its detections
agree with the float32 file's. A dynamic-range file (int8 weights, float activations) fails
every check below that names activations, which the old size-and-dtype check did not."""

import numpy as np
import pytest
from PIL import Image

from keras_gfocal.data import CocoDataset
from keras_gfocal.export import read_metadata


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    return interpreter


def _conv_kinds(path):
    """``(input activation dtype, weight dtype)`` of every CONV_2D / DEPTHWISE_CONV_2D op."""
    interpreter = _interpreter(path)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    return [
        (dtypes[op["inputs"][0]], dtypes[op["inputs"][1]])
        for op in interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
    ]


def test_int8_convolutions_take_int8_activations(exports):
    kinds = _conv_kinds(exports["tflite_int8"])
    assert kinds
    integer = sum(1 for k in kinds if k == ("int8", "int8"))
    # Integer kernels (int8 activations and weights) carry the network; convs that the export keeps
    # float on purpose (GroupNorm statistics, the DGQP, see tflite._float_tensor_names) are the rest.
    assert integer >= len(kinds) // 4, kinds
    # the control: a dynamic-range file has int8 weights but float activations everywhere
    dynamic = _conv_kinds(exports["tflite_dynamic"])
    assert not any(k[0] == "int8" for k in dynamic), dynamic


def test_int8_input_is_uint8_pixels_with_identity_quantization(exports):
    detail = _interpreter(exports["tflite_int8"]).get_input_details()[0]
    assert np.dtype(detail["dtype"]) == np.uint8
    scale, zero_point = detail["quantization"]
    # the input is 0..255 pixels: one quantization step per pixel value, zero at 0
    assert scale == pytest.approx(1.0, rel=0.02) and zero_point == 0
    metadata = read_metadata(exports["tflite_int8"])
    assert metadata["quantization"] == "int8"
    float_detail = _interpreter(exports["tflite_float32"]).get_input_details()[0]
    assert np.dtype(float_detail["dtype"]) == np.float32


def test_int8_interpreter_detects_what_float32_detects(exports, synthetic):
    from keras_gfocal.export.graphs import canvas_from_image

    dataset = CocoDataset(synthetic["val_ann_file"], synthetic["val_image_dir"])
    image = np.asarray(Image.open(dataset.image_path(dataset.image_ids[0])).convert("RGB"))
    canvas, _ = canvas_from_image(image, read_metadata(exports["tflite_int8"])["image_size"])
    results = {}
    for name in ("tflite_int8", "tflite_float32"):
        interpreter = _interpreter(exports[name])
        dtype = interpreter.get_input_details()[0]["dtype"]  # whatever input the file declares
        out = interpreter.get_signature_runner()(pixels=np.asarray(canvas, dtype)[None])
        names = read_metadata(exports[name])["outputs"]
        results[name] = {n: out[f"output_{i}"] for i, n in enumerate(names)}
    ref, q = results["tflite_float32"], results["tflite_int8"]
    n_ref, n_q = int(ref["num_detections"][0]), int(q["num_detections"][0])
    assert n_ref > 0 and n_q > 0
    # each confident float32 detection has an int8 one of its class on the same object
    confident = ref["scores"][0, :n_ref] > 0.3
    assert confident.any()
    for box, label in zip(ref["boxes"][0, :n_ref][confident], ref["labels"][0, :n_ref][confident]):
        same = q["labels"][0, :n_q] == label
        boxes = q["boxes"][0, :n_q][same]
        lt = np.maximum(box[:2], boxes[:, :2])
        rb = np.minimum(box[2:], boxes[:, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
        assert len(boxes) and (inter / union).max() > 0.7, (box, label, boxes)


def test_onnx_opset_read_from_the_file(exports):
    import onnx

    model = onnx.load(exports["onnx"])
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert versions.get("ai.onnx", 0) >= 17, versions
    # the file and its metadata agree
    metadata = read_metadata(exports["onnx"])
    if "opset" in metadata:
        assert metadata["opset"] == versions["ai.onnx"]
