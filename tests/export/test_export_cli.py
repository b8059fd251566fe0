"""`gfocal export`, and `gfocal evaluate` / `predict` on exported models."""

import json
import os

import pytest

from keras_gfocal.cli import main
from keras_gfocal.export import read_metadata


def test_export_command_writes_model_and_metadata(trained, tmp_path, capsys):
    _, model_path = trained
    out = str(tmp_path / "exported")
    assert main(["export", "--model", model_path, "--format", "onnx", "--quantize", "int8", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "--quantize apply to --format tflite only" in printed and os.path.join(out, "gfocal.onnx") in printed
    assert read_metadata(os.path.join(out, "gfocal.onnx"))["opset"] >= 17
    assert main(["export", "--model", model_path, "--format", "saved_model", "--name", "shapes",
                 "--version", "3", "--out", out]) == 0
    assert os.path.exists(os.path.join(out, "shapes", "3", "saved_model.pb"))


def test_export_command_errors(trained, exports, tmp_path):
    _, model_path = trained
    with pytest.raises(SystemExit, match="needs --calibration-ann and --calibration-images"):
        main(["export", "--model", model_path, "--format", "tflite", "--quantize", "int8", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="must be a .keras file"):
        main(["export", "--model", exports["onnx"], "--format", "tflite", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="Model file not found: .*missing.keras"):
        main(["export", "--model", str(tmp_path / "missing.keras"), "--format", "onnx"])


@pytest.mark.parametrize("name", ["saved_model", "tflite_int8", "onnx"])
def test_evaluate_and_predict_accept_exports(exports, synthetic, tmp_path, capsys, name):
    results_json = str(tmp_path / "results.json")
    assert main(["evaluate", "--model", exports[name], "--ann", synthetic["val_ann_file"],
                 "--images", synthetic["val_image_dir"], "--results-json", results_json]) == 0
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in printed
    assert json.load(open(results_json))
    pred_dir = str(tmp_path / "pred")
    assert main(["predict", synthetic["val_image_dir"], "--model", exports[name], "--out", pred_dir]) == 0
    predictions = json.load(open(os.path.join(pred_dir, "predictions.json")))
    assert len(predictions) == 24 and all(os.path.exists(p["picture"]) for p in predictions)
    detection = next(d for p in predictions for d in p["detections"])
    assert len(detection["edge_confidence_ltrb"]) == 4
