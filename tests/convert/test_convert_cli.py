"""``gfocal convert`` end to end on an official-layout GFocalV2 checkpoint file.

``fixtures/pth/gfocal_v2_r50_stub.pth`` was written by real ``torch.save`` (see
tests/fixtures/make_reference_fixtures.py): every key and shape of the official
GFocalV2 R50 checkpoint, 81 cls channels, each tensor a stride-0 view so the
file stays small. Its weights make every point predict class 0, "person".

The hostile files of ``hostile_files.py`` check the other end: values the reader accepts but
the converter must not trust (a 0-d class bias, a non-list ``meta["CLASSES"]``, a 2,000,000-class
head), and that ``gfocal convert`` answers each bad file with one line and exit code 2.
"""

import json
import os

import hostile_files as hostile
import keras
import numpy as np
import pytest
from PIL import Image

from keras_gfocal.checkpoints import CheckpointError, CheckpointMismatchError
from keras_gfocal.cli import build_parser, main
from keras_gfocal.convert import convert_checkpoint

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


# ----------------------------------------------------------------------------- hostile values
def _convert_error(path, tmp_path, capsys):
    """Run ``gfocal convert`` on ``path``; return ``(exit code, stderr)``."""
    out = str(tmp_path / "hostile.keras")
    code = main(["convert", "--checkpoint", str(path), "--preset", "gfocal_v2_r50_fpn", "--out", out])
    assert not os.path.exists(out)
    return code, capsys.readouterr().err


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_a_zero_d_class_bias_is_refused_as_data(tmp_path):
    # Read fine, but the class count comes off gfl_cls.bias's first dimension, which a 0-d one lacks.
    path = _write(tmp_path, "scalar_bias.pth", hostile.zip_with_one_tensor((), (), key="bbox_head.gfl_cls.bias"))
    with pytest.raises(CheckpointError, match=r"scalar_bias\.pth: bbox_head\.gfl_cls\.bias should be a 1-D float"):
        convert_checkpoint(path, "gfocal_v2_r50_fpn")


def test_a_non_list_meta_classes_is_refused_as_data(tmp_path):
    meta = hostile.dictionary([("CLASSES", hostile.integer(7))])
    data = hostile.zip_with_one_tensor((8,), (0,), meta_ops=meta, key="bbox_head.gfl_cls.bias")
    path = _write(tmp_path, "classes_7.pth", data)
    with pytest.raises(CheckpointError, match=r"classes_7\.pth: meta\['CLASSES'\] should be a list .* is a int\.$"):
        convert_checkpoint(path, "gfocal_v2_r50_fpn")


def test_a_two_million_class_head_is_refused_before_anything_is_built(tmp_path):
    # A 600-byte file: one float seen 2,000,001 times (stride 0).
    path = _write(
        tmp_path, "huge_head.pth", hostile.zip_with_one_tensor((2_000_001,), (0,), key="bbox_head.gfl_cls.bias")
    )
    with pytest.raises(
        CheckpointMismatchError,
        match=r"huge_head\.pth: bbox_head\.gfl_cls\.bias has 2000001 channels, i\.e\. 2000000 classes; "
        r"a head has 1 to 10,000",
    ):
        convert_checkpoint(path, "gfocal_v2_r50_fpn")
    with pytest.raises(CheckpointMismatchError, match="num_classes=0; a head has 1 to 10,000 classes"):
        convert_checkpoint(path, "gfocal_v2_r50_fpn", num_classes=0)


def test_gfl_cls_weight_must_match_its_bias(tmp_path):
    state = {"bbox_head.gfl_cls.bias": np.zeros(81, np.float32), "bbox_head.gfl_cls.weight": np.zeros((80, 256, 3, 3))}
    with pytest.raises(CheckpointMismatchError, match=r"weight \(80, 256, 3, 3\) does not fit .*bias \(81,\)"):
        convert_checkpoint(state, "gfocal_v2_r50_fpn")


@pytest.mark.parametrize(
    "name, build, fragment",
    [
        ("encrypted.pth", hostile.encrypted_entry, "is encrypted"),
        ("method99.pth", hostile.unknown_compression, "uses compression method 99"),
        ("deflate.pth", hostile.corrupt_deflate, "invalid block type"),
        ("dicts.pth", hostile.shared_dicts, "is a dict met before"),
        (
            "huge_head.pth",
            lambda: hostile.zip_with_one_tensor((2_000_001,), (0,), key="bbox_head.gfl_cls.bias"),
            "1 to 10,000 classes",
        ),
    ],
)
def test_convert_prints_one_line_for_a_hostile_file(tmp_path, capsys, name, build, fragment):
    path = _write(tmp_path, name, build())
    code, err = _convert_error(path, tmp_path, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"gfocal convert: error: {path}") and fragment in lines[0], lines[0]
