"""keras_gfocal.analysis.report: ``analyze`` end to end, every number recomputed from the positives."""

import json
import os

import keras
import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.analysis import SIGNALS, analyze
from keras_gfocal.data import make_synthetic_coco


def test_analyze_end_to_end(tmp_path, capsys):
    paths = make_synthetic_coco(str(tmp_path / "data"), num_train=8, num_val=4, image_size=(64, 64))
    keras.utils.set_random_seed(0)
    v2 = GFocalDetector.from_preset("gfocal_v2_tiny", num_classes=3, image_size=(64, 64))
    v1 = GFocalDetector.from_preset("gfocal_v1_tiny", num_classes=3, image_size=(64, 64))
    out = str(tmp_path / "analysis")
    # Untrained models score about 0.01 x 0.5: a zero threshold keeps their detections.
    report = analyze(
        v2, paths["val_ann_file"], paths["val_image_dir"], out, v1_model=v1, score_threshold=0.0, verbose=True
    )

    for name in ("quality_vs_iou.png", "distributions.png"):
        path = os.path.join(out, name)
        assert report["files"][name[:-4]] == path
        assert os.path.getsize(path) > 10000, name
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    saved = json.load(open(os.path.join(out, "correlations.json")))
    assert saved == json.loads(json.dumps(report))
    assert saved["dgqp"] is True and saved["num_images"] == 4
    assert set(saved["pearson_iou"]) == set(SIGNALS)
    # Every number of the report, recomputed from the positives with NumPy's own correlation.
    from keras_gfocal.analysis import collect_positive_predictions
    from keras_gfocal.data import CocoDataset

    dataset = CocoDataset(paths["val_ann_file"], paths["val_image_dir"])
    for model, part in ((v2, saved), (v1, saved["v1"])):
        res = collect_positive_predictions(model, dataset, score_threshold=0.0)
        assert part["num_positives"] == len(res["iou"]) >= 2
        assert part["num_detections"] == res["num_detections"]
        assert part["mean_iou"] == pytest.approx(float(np.mean(res["iou"])), rel=1e-6)
        signals = {"joint_score": res["joint_score"], "edge_top1_mean": res["edge_top1"].mean(axis=1)}
        if model is v2:
            signals.update(dgqp_quality=res["quality"], cls_score=res["cls_score"])
        else:
            signals["score"] = signals.pop("joint_score")
        assert set(part["pearson_iou"]) == set(signals)
        for key, values in signals.items():
            expected = np.corrcoef(res["iou"].astype(np.float64), values.astype(np.float64))[0, 1]
            assert part["pearson_iou"][key] == pytest.approx(expected, abs=1e-6), key
    assert saved["v1"]["dgqp"] is False
    printed = capsys.readouterr().out
    assert "DGQP quality" in printed and "GFocalV1 score" in printed
