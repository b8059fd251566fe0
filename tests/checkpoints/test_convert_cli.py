"""``gfocal convert`` end to end on an official-layout GFocalV2 checkpoint file.

``fixtures/pth/gfocal_v2_r50_stub.pth`` was written by real ``torch.save`` (see
tests/fixtures/make_reference_fixtures.py): every key and shape of the official
GFocalV2 R50 checkpoint, 81 cls channels, each tensor a stride-0 view so the
file stays small. Its weights make every point predict class 0, "person".
"""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_gfocal.cli import build_parser, main

STUB = os.path.join(os.path.dirname(__file__), "..", "fixtures", "pth", "gfocal_v2_r50_stub.pth")


def test_convert_then_predict_names_coco_classes(tmp_path, capsys):
    out = str(tmp_path / "v2.keras")
    assert main(["convert", "--checkpoint", STUB, "--preset", "gfocal_v2_r50_fpn", "--out", out]) == 0
    assert "80 classes: person, bicycle, car" in capsys.readouterr().out
    model = keras.saving.load_model(out, safe_mode=True)
    assert model.num_classes == 80 and model.image_size is None
    assert model.class_names[-1] == "toothbrush" and model.category_ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    # The stub's cls bias: +4.0 for class 0, -4.6 for the others; the background channel is gone.
    np.testing.assert_allclose(np.asarray(model.head.cls_out.bias), [4.0] + [-4.6] * 79)

    photo = str(tmp_path / "photo.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)).save(photo)
    pictures = str(tmp_path / "pictures")
    assert main(["predict", photo, "--model", out, "--out", pictures]) == 0
    detections = json.load(open(os.path.join(pictures, "predictions.json")))[0]["detections"]
    assert detections and {d["class_name"] for d in detections} == {"person"}
    assert {d["category_id"] for d in detections} == {1}


def test_convert_refuses_a_checkpoint_of_another_architecture(tmp_path, capsys):
    # The V2 checkpoint into the V1 preset: its quality branch has no place there.
    code = main(["convert", "--checkpoint", STUB, "--preset", "gfocal_v1_r50_fpn", "--out", str(tmp_path / "x.keras")])
    assert code == 2
    err = capsys.readouterr().err
    assert "gfocal_v2_r50_stub.pth" in err and "not used by the model: bbox_head.reg_conf.0.bias" in err
    assert not os.path.exists(tmp_path / "x.keras")


def test_convert_refuses_a_pickle_that_runs_code(tmp_path, capsys):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    code = main(
        ["convert", "--checkpoint", str(evil), "--preset", "gfocal_v2_r50_fpn", "--out", str(tmp_path / "e.keras")]
    )
    assert code == 2
    assert "not a plain checkpoint" in capsys.readouterr().err and not marker.exists()


def test_convert_help():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["convert", "--help"])
    assert exit_info.value.code == 0
