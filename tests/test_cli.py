"""The gfocal command end to end on a tiny synthetic dataset."""

import json
import os
import subprocess
import sys

import pytest

from keras_gfocal.cli import build_parser, main


def test_every_command_has_help(capsys):
    for command in ("synth", "train", "evaluate", "predict", "export", "analyze", "demo"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: gfocal " + command in capsys.readouterr().out


def test_synth_train_evaluate_predict(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert main(["synth", data, "--num-train", "16", "--num-val", "4", "--image-size", "64"]) == 0
    ann = os.path.join(data, "annotations")
    run = str(tmp_path / "run")
    assert main([
        "train", "--train-ann", f"{ann}/instances_train.json", "--train-images", f"{data}/train",
        "--val-ann", f"{ann}/instances_val.json", "--val-images", f"{data}/val",
        "--preset", "gfocal_v2_tiny", "--epochs", "1", "--batch-size", "4", "--image-size", "64", "--out", run,
    ]) == 0
    for name in ("model.keras", "log.csv", "checkpoints/epoch_001.keras", "eval/metrics.json"):
        assert os.path.exists(os.path.join(run, name)), name
    header = open(os.path.join(run, "log.csv")).readline()
    for column in ("qfl", "giou", "dfl", "val_AP"):
        assert column in header

    results_json = str(tmp_path / "results.json")
    assert main([
        "evaluate", "--model", f"{run}/model.keras", "--ann", f"{ann}/instances_val.json",
        "--images", f"{data}/val", "--results-json", results_json,
    ]) == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in out and "AP per class: circle" in out
    results = json.load(open(results_json))
    assert all(r["category_id"] in (1, 3, 7) for r in results)

    pred_dir = str(tmp_path / "pred")
    assert main(["predict", f"{data}/val", "--model", f"{run}/model.keras", "--out", pred_dir]) == 0
    predictions = json.load(open(os.path.join(pred_dir, "predictions.json")))
    assert len(predictions) == 4
    assert all(os.path.exists(p["picture"]) for p in predictions)


def test_errors_name_the_bad_input(tmp_path, capsys):
    from keras_gfocal.cli import _list_images

    with pytest.raises(SystemExit, match="Model file not found: .*nope.keras"):
        main(["evaluate", "--model", str(tmp_path / "nope.keras"), "--ann", "a.json", "--images", "x"])
    with pytest.raises(SystemExit, match="no such file or folder: .*missing_dir"):
        _list_images([str(tmp_path / "missing_dir")])
    missing_ann = str(tmp_path / "missing.json")
    code = main(["train", "--train-ann", missing_ann, "--train-images", str(tmp_path), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "missing.json" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "keras_gfocal.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_evaluate_and_predict_use_the_reference_resize_without_a_canvas(tmp_path, capsys, monkeypatch):
    import keras

    from keras_gfocal import GFocalDetector
    from keras_gfocal.data import make_synthetic_coco, transforms

    monkeypatch.setattr(transforms, "REFERENCE_TEST_SCALE", (64, 100))  # small limits: a fast test
    shapes = []

    def recording(self, images):
        shapes.append(tuple(images.shape))
        return keras.Model.predict_on_batch(self, images)

    monkeypatch.setattr(GFocalDetector, "predict_on_batch", recording)
    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=0, num_val=2, image_size=(48, 64), seed=3)
    model = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3)
    model.build((None, None, None, 3))
    path = str(tmp_path / "converted.keras")
    model.save(path)  # no image_size, as a model converted from a reference checkpoint

    assert main(["evaluate", "--model", path, "--ann", paths["val_ann_file"], "--images", paths["val_image_dir"],
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "reference's test resize" in out and "Average Precision" in out
    # 48 x 64 images: scale min(64 / 48, 100 / 64) = 4 / 3 -> 64 x 85, padded to 64 x 96, two of one size.
    assert shapes == [(2, 64, 96, 3)]
    # `gfocal predict` opens the same detector, which resizes each image the reference's way
    # (its `detect` is checked in tests/test_evaluation.py).
    from keras_gfocal.cli import _open_detector

    detector = _open_detector(path)
    assert detector.image_size is None and detector.test_scale == (64, 100)
