"""gfocal evaluate and predict end to end with detections guaranteed, and the installed command.

tests/test_cli.py's run trains 4 steps: its scores stay near the 0.01 prior, under the 0.05
threshold, so evaluate and predict may see no detection at all and pycocotools may never run.
Here the model's classification bias is raised so that every point scores far above the
threshold: evaluate must write results and run pycocotools on them (its AP is recomputed here
with pycocotools directly), and predict must report detections on every image.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.cli import main
from keras_gfocal.data import make_synthetic_coco


@pytest.fixture(scope="module")
def scored_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_detections")
    paths = make_synthetic_coco(str(root / "data"), num_train=0, num_val=3, image_size=(64, 64), seed=2)
    categories = json.load(open(paths["val_ann_file"]))["categories"]
    keras.utils.set_random_seed(0)
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny",
        num_classes=len(categories),
        image_size=(64, 64),
        class_names=[c["name"] for c in categories],
        category_ids=[c["id"] for c in categories],
    )
    model(np.zeros((1, 64, 64, 3), np.float32))
    kernel, bias = model.head.cls_out.get_weights()
    model.head.cls_out.set_weights([kernel, np.full_like(bias, 4.0)])  # sigmoid(4) x quality ~0.5 >> 0.05
    path = str(root / "model.keras")
    model.save(path)
    return path, paths, [c["id"] for c in categories]


def test_evaluate_runs_pycocotools_on_real_detections(scored_model, tmp_path, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    model_path, paths, category_ids = scored_model
    results_json = str(tmp_path / "results.json")
    assert (
        main(
            [
                "evaluate",
                "--model",
                model_path,
                "--ann",
                paths["val_ann_file"],
                "--images",
                paths["val_image_dir"],
                "--results-json",
                results_json,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "No detections" not in out
    results = json.load(open(results_json))
    gt = COCO(paths["val_ann_file"])
    assert {r["image_id"] for r in results} == set(gt.getImgIds())  # every image has detections
    for image_id in gt.getImgIds():
        assert 0 < sum(r["image_id"] == image_id for r in results) <= 100
    assert {r["category_id"] for r in results} <= set(category_ids)
    assert all(r["score"] > 0.05 and len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)
    # the AP printed is pycocotools' own on those results
    evaluator = COCOeval(gt, gt.loadRes(results_json), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    printed = re.search(
        r"Average Precision  \(AP\) @\[ IoU=0\.50:0\.95 \| area=   all \| maxDets=100 \] = "
        r"(-?[0-9.]+)",
        out,
    )
    assert printed, out
    assert float(printed.group(1)) == pytest.approx(evaluator.stats[0], abs=1e-3)


def test_predict_reports_detections_on_every_image(scored_model, tmp_path, capsys):
    model_path, paths, _ = scored_model
    pred_dir = str(tmp_path / "pred")
    assert main(["predict", paths["val_image_dir"], "--model", model_path, "--out", pred_dir]) == 0
    predictions = json.load(open(os.path.join(pred_dir, "predictions.json")))
    assert len(predictions) == 3
    for p in predictions:
        assert os.path.getsize(p["picture"]) > 0
        assert 0 < len(p["detections"]) <= 100, p
        for d in p["detections"]:
            assert d["score"] > 0.05
    total = sum(len(p["detections"]) for p in predictions)
    assert f"{total} detections on 3 images" in capsys.readouterr().out


def test_installed_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "gfocal")
    assert os.path.exists(script), "the gfocal console script is not installed (pip install -e .)"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: gfocal" in out.stdout and "demo" in out.stdout
