"""``gfocal export``, and ``gfocal evaluate`` / ``predict`` on exported models."""

import json
import os

import pytest

from keras_gfocal.cli import main
from keras_gfocal.export import read_metadata


def test_export_command_writes_model_and_metadata(trained, tmp_path, capsys):
    # One export through the command (the formats themselves: the exports fixture and its tests).
    _, model_path = trained
    out = str(tmp_path / "exported")
    argv = ["--model", model_path, "--format", "saved_model", "--quantize", "int8", "--name", "shapes"]
    assert main(["export", *argv, "--version", "3", "--out", out]) == 0
    printed = capsys.readouterr().out
    path = os.path.join(out, "shapes", "3")
    assert "--quantize apply to --format tflite only" in printed and path in printed
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    metadata = read_metadata(path)
    assert metadata["format"] == "saved_model" and metadata["detections"]


def test_export_command_errors(trained, exports, tmp_path, capsys):
    _, model_path = trained
    for argv, message in (
        (
            ["--model", model_path, "--format", "tflite", "--quantize", "int8", "--out", str(tmp_path)],
            "error: --quantize int8 needs --calibration-ann and --calibration-images",
        ),
        (["--model", exports["onnx"], "--format", "tflite", "--out", str(tmp_path)], "error: --model must be a .keras"),
        (["--model", str(tmp_path / "missing.keras"), "--format", "onnx"], "error: model file not found: "),
    ):
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gfocal export: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["saved_model", "tflite_int8", "onnx"])
def test_evaluate_and_predict_accept_exports(exports, synthetic, tmp_path, capsys, name):
    results_json = str(tmp_path / "results.json")
    assert (
        main(
            [
                "evaluate",
                "--model",
                exports[name],
                "--ann",
                synthetic["val_ann_file"],
                "--images",
                synthetic["val_image_dir"],
                "--results-json",
                results_json,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in printed
    assert json.load(open(results_json))
    pred_dir = str(tmp_path / "pred")
    assert main(["predict", synthetic["val_image_dir"], "--model", exports[name], "--out", pred_dir]) == 0
    predictions = json.load(open(os.path.join(pred_dir, "predictions.json")))
    assert len(predictions) == 24 and all(os.path.exists(p["picture"]) for p in predictions)
    detection = next(d for p in predictions for d in p["detections"])
    assert len(detection["edge_confidence_ltrb"]) == 4


def test_export_choices_and_the_default_canvas_come_from_the_library():
    from keras_gfocal.cli import build_parser
    from keras_gfocal.data.transforms import REFERENCE_IMAGE_SIZE
    from keras_gfocal.export import FORMATS

    commands = build_parser()._subparsers._group_actions[0].choices
    export_flags = {a.dest: a for a in commands["export"]._actions}
    assert tuple(export_flags["format"].choices) == FORMATS == ("saved_model", "tflite", "onnx")
    assert list(export_flags["quantize"].choices) == ["float16", "dynamic", "int8"]
    train_flags = {a.dest: a for a in commands["train"]._actions}
    assert train_flags["image_size"].default == REFERENCE_IMAGE_SIZE == (800, 1333)
    assert "default 800,1333" in train_flags["image_size"].help
