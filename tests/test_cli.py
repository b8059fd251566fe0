"""The gfocal command end to end on a tiny synthetic dataset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_gfocal.cli import build_parser, main


def test_every_command_has_help(capsys):
    for command in ("synth", "train", "evaluate", "predict", "export", "analyze", "demo", "convert"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: gfocal " + command in capsys.readouterr().out


def test_synth_train_evaluate_predict(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert main(["synth", data, "--num-train", "16", "--num-val", "4", "--image-size", "64"]) == 0
    ann = os.path.join(data, "annotations")
    run = str(tmp_path / "run")
    # A truncated training image with a box: --skip-bad-images leaves it out of the training pipeline.
    train_json = json.load(open(f"{ann}/instances_train.json"))
    first = train_json["images"][0]
    from PIL import Image

    Image.open(os.path.join(data, "train", first["file_name"])).convert("RGB").save(f"{data}/train/cut.jpg")
    _cut(f"{data}/train/cut.jpg")
    train_json["images"].append(dict(first, id=999, file_name="cut.jpg"))
    train_json["annotations"].append(dict(train_json["annotations"][0], id=9999, image_id=999))
    json.dump(train_json, open(f"{ann}/instances_train.json", "w"))
    assert (
        main(
            [
                "train",
                "--train-ann",
                f"{ann}/instances_train.json",
                "--train-images",
                f"{data}/train",
                "--val-ann",
                f"{ann}/instances_val.json",
                "--val-images",
                f"{data}/val",
                "--preset",
                "gfocal_v2_tiny",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--image-size",
                "64",
                "--out",
                run,
                "--skip-bad-images",
            ]
        )
        == 0
    )
    assert "left out: 1 bad image(s) (cut.jpg)" in capsys.readouterr().out
    for name in ("model.keras", "log.csv", "checkpoints/epoch_001.keras", "eval/metrics.json"):
        assert os.path.exists(os.path.join(run, name)), name
    header = open(os.path.join(run, "log.csv")).readline()
    for column in ("qfl", "giou", "dfl", "val_AP"):
        assert column in header

    # Four training steps leave every score near the 0.01 prior, under evaluate's 0.05 threshold:
    # the trained model's classification bias is raised (sigmoid(4) x quality, far above 0.05) so
    # that evaluate and predict see detections and what follows can fail. The model, its class
    # names and category ids are still the ones `gfocal train` wrote.
    import keras

    import keras_gfocal.detector  # noqa: F401  (registers the model's classes)

    model = keras.saving.load_model(f"{run}/model.keras")
    kernel, bias = model.head.cls_out.get_weights()
    model.head.cls_out.set_weights([kernel, np.full_like(bias, 4.0)])
    model.save(f"{run}/scored.keras")

    results_json = str(tmp_path / "results.json")
    assert (
        main(
            [
                "evaluate",
                "--model",
                f"{run}/scored.keras",
                "--ann",
                f"{ann}/instances_val.json",
                "--images",
                f"{data}/val",
                "--results-json",
                results_json,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "No detections" not in out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in out and "AP per class: circle" in out
    results = json.load(open(results_json))
    val_json = json.load(open(f"{ann}/instances_val.json"))
    assert {r["image_id"] for r in results} == {im["id"] for im in val_json["images"]}
    # the synthetic set's category ids (1, 3, 7), not the model's class indices 0-2
    assert {c["id"] for c in val_json["categories"]} == {1, 3, 7}
    assert {r["category_id"] for r in results} <= {1, 3, 7} and len(results) > 4
    assert all(r["score"] > 0.05 for r in results)

    pred_dir = str(tmp_path / "pred")
    assert main(["predict", f"{data}/val", "--model", f"{run}/scored.keras", "--out", pred_dir]) == 0
    predictions = json.load(open(os.path.join(pred_dir, "predictions.json")))
    assert len(predictions) == 4
    id_of_name = {c["name"]: c["id"] for c in val_json["categories"]}
    for p in predictions:
        assert os.path.getsize(p["picture"]) > 0
        assert 0 < len(p["detections"]) <= 100, p
        for d in p["detections"]:
            assert d["score"] > 0.05 and id_of_name[d["class_name"]] == d["category_id"], d


def test_errors_name_the_bad_input(tmp_path, capsys):
    from keras_gfocal.cli import _list_images

    # every error of a command: one "gfocal <command>: error:" line on stderr and status 2
    assert main(["evaluate", "--model", str(tmp_path / "nope.keras"), "--ann", "a.json", "--images", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gfocal evaluate: error: model file not found: ") and err.endswith("nope.keras"), err
    assert main(["predict", "--model", str(tmp_path / "nope.keras"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("gfocal predict: error: model file not found: ")
    with pytest.raises(FileNotFoundError, match="no such file or folder: .*missing_dir"):
        _list_images([str(tmp_path / "missing_dir")])
    with pytest.raises(FileNotFoundError, match="no images found in .*"):
        _list_images([str(tmp_path)])
    code = main(["train", "--train-ann", "a.json", "--train-images", "x", "--val-ann", "v.json", "--out", "r"])
    assert code == 2
    assert capsys.readouterr().err == "gfocal train: error: give both --val-ann and --val-images, or neither.\n"
    missing_ann = str(tmp_path / "missing.json")
    code = main(["train", "--train-ann", missing_ann, "--train-images", str(tmp_path), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "missing.json" in capsys.readouterr().err


def test_console_script_is_installed():
    # The installed `gfocal` entry point (next to this interpreter), not `python -m`.
    script = os.path.join(os.path.dirname(sys.executable), "gfocal")
    assert os.path.exists(script), "the gfocal console script is not installed (pip install -e .)"
    out = subprocess.run([script, "synth", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: gfocal synth") and "--num-train" in out.stdout


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

    assert (
        main(
            [
                "evaluate",
                "--model",
                path,
                "--ann",
                paths["val_ann_file"],
                "--images",
                paths["val_image_dir"],
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "reference's test resize" in out and "Average Precision" in out
    # 48 x 64 images: scale min(64 / 48, 100 / 64) = 4 / 3 -> 64 x 85, padded to 64 x 96, two of one size.
    assert shapes == [(2, 64, 96, 3)]
    # `gfocal predict` opens the same detector, which resizes each image the reference's way
    # (its `detect` is checked in tests/test_evaluation.py).
    from keras_gfocal.cli import _open_detector

    detector = _open_detector(path)
    assert detector.image_size is None and detector.test_scale == (64, 100)


# ------------------------------------------------------------------ bad input


def _one_error_line(err, command):
    """The single error line of a failed command (tqdm bars may share stderr)."""
    lines = [line for line in err.splitlines() if line.startswith(f"gfocal {command}: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def _coco_folder(tmp_path, bbox, image_names=("a.png",)):
    """A raw COCO JSON (NaN allowed) over small PNG / JPEG images of 32 x 32."""
    from PIL import Image

    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 255, [32, 32, 3]).astype(np.uint8)
    images = []
    for i, name in enumerate(image_names, 1):
        Image.fromarray(noise).save(str(image_dir / name))
        images.append({"id": i, "file_name": name, "height": 32, "width": 32})
    annotations = [{"id": 5, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}]
    annotations += [
        {"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20], "iscrowd": 0}
        for i in range(2, len(images) + 1)
    ]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    )
    return str(ann_file), str(image_dir)


def _train_argv(ann_file, image_dir, tmp_path, batch_size):
    """``gfocal train`` of the tiny preset at 32 x 32 on a ``_coco_folder`` dataset, into ``tmp_path / "run"``."""
    return [
        "train",
        "--train-ann",
        ann_file,
        "--train-images",
        image_dir,
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "gfocal_v2_tiny",
        "--image-size",
        "32",
        "--batch-size",
        str(batch_size),
    ]


def _cut(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.mark.parametrize(
    "bbox, reason",
    [
        ([float("nan"), 10, 20, 20], "bbox [nan, 10, 20, 20] holds a non-finite number (NaN or infinity)."),
        ([None, 10, 20, 20], "bbox [None, 10, 20, 20] must hold four numbers [x, y, w, h]."),
        ([10, 10, "wide", 20], "bbox [10, 10, 'wide', 20] must hold four numbers [x, y, w, h]."),
    ],
)
def test_train_answers_a_broken_bbox_in_one_line(tmp_path, capsys, bbox, reason):
    ann_file, image_dir = _coco_folder(tmp_path, bbox)
    code = main(_train_argv(ann_file, image_dir, tmp_path, batch_size=1))
    assert code == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert line == f"gfocal train: error: {ann_file}: annotation 5 (image 1, a.png): {reason}"


def test_train_without_usable_boxes_says_why(tmp_path, capsys):
    ann_file, image_dir = _coco_folder(tmp_path, [1, 1, 0, 20])
    code = main(_train_argv(ann_file, image_dir, tmp_path, batch_size=2))
    assert code == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err, "train")
    assert (
        f"{ann_file} has no images with a usable box to train on (1 usable images; left out: 1 boxes narrower "
        "or lower than 1 pixel" in line
    )
    assert "batch-size" not in line
    assert "left out: 1 boxes narrower or lower than 1 pixel" in captured.out  # the summary is printed too


def test_train_names_every_truncated_image_and_skips_them_on_request(tmp_path, capsys):
    ann_file, image_dir = _coco_folder(tmp_path, [2, 2, 20, 20], ["a.png", "cut1.jpg", "cut2.jpg"])
    for name in ("cut1.jpg", "cut2.jpg"):
        _cut(os.path.join(image_dir, name))
    args = _train_argv(ann_file, image_dir, tmp_path, batch_size=2)
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert line.startswith(f"gfocal train: error: 2 bad image(s) listed in {ann_file}")
    for name in ("cut1.jpg", "cut2.jpg"):
        assert f"'{name}': cannot decode image (jpeg::Uncompress failed" in line
    # With --skip-bad-images both are left out, and said so; one image is left: fewer than a batch of 2.
    assert main(args + ["--skip-bad-images"]) == 2
    captured = capsys.readouterr()
    assert "left out: 2 bad image(s) (cut1.jpg, cut2.jpg)" in captured.out
    assert "has 1 images with boxes, fewer than one batch of 2" in _one_error_line(captured.err, "train")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from keras_gfocal import GFocalDetector

    folder = tmp_path_factory.mktemp("model")
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny", num_classes=1, image_size=(32, 32), class_names=["thing"], category_ids=[1]
    )
    model.build((None, 32, 32, 3))
    path = str(folder / "model.keras")
    model.save(path)
    return model, path


def test_evaluate_and_predict_skip_truncated_images(tmp_path, capsys, tiny_model, monkeypatch):
    import keras_gfocal.evaluation
    from keras_gfocal.export.runtime import KerasDetector

    _, model_path = tiny_model
    # Inference itself is tested elsewhere: here only which images reach it.
    reached = []
    monkeypatch.setattr(
        keras_gfocal.evaluation,
        "predict_coco",
        lambda model, ds, ids: reached.extend(int(i) for _, _, m in ds for i in m["image_id"]) or [],
    )
    empty = {
        "boxes": np.zeros([0, 4]),
        "scores": np.zeros([0]),
        "labels": np.zeros([0], int),
        "category_ids": np.zeros([0], int),
    }
    monkeypatch.setattr(KerasDetector, "detect", lambda self, image: empty)
    ann_file, image_dir = _coco_folder(tmp_path, [2, 2, 20, 20], ["a.png", "cut.jpg"])
    _cut(os.path.join(image_dir, "cut.jpg"))
    evaluate = ["evaluate", "--model", model_path, "--ann", ann_file, "--images", image_dir]
    assert main(evaluate) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert "'cut.jpg': cannot decode image (jpeg::Uncompress failed" in line
    assert main(evaluate + ["--skip-bad-images"]) == 0
    out = capsys.readouterr().out
    assert "left out: 1 bad image(s) (cut.jpg)" in out and "detections on 1 images" in out
    assert reached == [1]  # image 2, cut.jpg, never reached the pipeline
    # Headers only: cut.jpg reaches the pipeline, whose error names it, in one line.
    assert main(evaluate + ["--verify-images", "header"]) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert line.startswith(
        f"gfocal evaluate: error: Cannot decode image {os.path.join(image_dir, 'cut.jpg')}: not a complete JPEG"
    ), line
    assert "--verify-images decode" in line

    predict = ["predict", image_dir, "--model", model_path, "--out", str(tmp_path / "pred")]
    assert main(predict) == 2
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert f"Cannot decode image {os.path.join(image_dir, 'cut.jpg')}: jpeg::Uncompress failed" in line
    assert "--skip-bad-images" in line
    assert main(predict + ["--skip-bad-images"]) == 0
    captured = capsys.readouterr()
    assert f"Skipped 1 unreadable image(s): {os.path.join(image_dir, 'cut.jpg')}" in captured.out
    predictions = json.load(open(tmp_path / "pred" / "predictions.json"))
    assert [p["file"] for p in predictions] == [os.path.join(image_dir, "a.png")]


def test_damaged_model_files_are_called_damaged(tmp_path, capsys, tiny_model):
    from keras_gfocal.data.input_resize import InputResize
    from keras_gfocal.export.metadata import build_metadata, write_metadata

    model, model_path = tiny_model
    image = str(tmp_path / "a.png")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    cut = str(tmp_path / "model_cut.keras")
    open(cut, "wb").write(open(model_path, "rb").read()[:5000])
    saved_model = tmp_path / "sm"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"\x00 not a protobuf")
    write_metadata(str(saved_model), build_metadata(model, InputResize(image_size=(32, 32)), "saved_model"))
    lite = str(tmp_path / "model.tflite")
    open(lite, "wb").write(b"not a flatbuffer" * 4)
    write_metadata(lite, build_metadata(model, InputResize(image_size=(32, 32)), "tflite"))
    cases = [
        (cut, "the .keras file is damaged or not a model (ValueError: not a complete zip archive"),
        (str(saved_model), "the SavedModel is damaged or not a model (OSError: Cannot parse file"),
        (lite, "the .tflite file is damaged or not a model"),
    ]
    for path, message in cases:
        assert main(["predict", image, "--model", path, "--out", str(tmp_path / "pred")]) == 2
        line = _one_error_line(capsys.readouterr().err, "predict")
        assert line.startswith(f"gfocal predict: error: Cannot load {path}: {message}"), line


def test_a_decode_error_inside_the_pipeline_is_one_line(capsys, monkeypatch):
    import tensorflow as tf

    from keras_gfocal import cli

    def failing(args):
        tf.io.decode_image(b"\xff\xd8\xff\xe0 cut", channels=3)

    def buggy(args):
        raise KeyError("a real bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["synth"].set_defaults(func=failing)
    assert main(["synth", "x"]) == 2
    line = _one_error_line(capsys.readouterr().err, "synth")
    assert line.startswith(
        "gfocal synth: error: an image could not be decoded in the input pipeline "
        "(jpeg::Uncompress failed. Invalid JPEG data or crop window.); run with --verify-images "
        "decode"
    ), line
    parser._subparsers._group_actions[0].choices["synth"].set_defaults(func=buggy)
    with pytest.raises(KeyError, match="a real bug"):  # a bug keeps its traceback
        main(["synth", "x"])
