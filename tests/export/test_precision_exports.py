"""SavedModels that compute in bfloat16 / float16: served as TF Serving calls them, their
detections against the float32 export's, their metadata, ``load_detector`` and ``gfocal export``."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal.cli import main
from keras_gfocal.data import CocoDataset
from keras_gfocal.export import export_model, load_detector, read_metadata
from keras_gfocal.image import read_image

#: Detections compared: those the float32 export scores above this.
CONFIDENT = 0.3
#: How far a box edge (pixels of the 128 x 128 images) and a score may move. An edge is the
#: stride times the expected bin of its 17-bin distribution; the lower precision moves the
#: logits by a few of its unit roundoffs (test_precision), which moves an edge by a small
#: fraction of a bin: for bfloat16 at most 1/16 of a stride-8 bin, half a pixel (measured:
#: under 0.2). float16 keeps 3 more significant bits: 8 times less (measured: under 0.03 px,
#: and 1.6e-4 against bfloat16's 1.1e-3 on the scores).
BOX_ATOL = {"bfloat16": 0.5, "float16": 0.5 / 8}
SCORE_ATOL = {"bfloat16": 5e-3, "float16": 5e-3 / 8}


@pytest.fixture(scope="module")
def precision_exports(trained, tmp_path_factory):
    """precision -> SavedModel version folder of the trained model."""
    model, _ = trained
    out = str(tmp_path_factory.mktemp("precision_exports"))
    return {p: export_model(model, "saved_model", out, name=p, precision=p) for p in ("float32", "bfloat16", "float16")}


@pytest.fixture(scope="module")
def val_images(synthetic):
    dataset = CocoDataset(synthetic["val_ann_file"], synthetic["val_image_dir"])
    return np.stack([read_image(dataset.image_path(i)) for i in dataset.image_ids[:8]])


def _serve(path, images):
    """``serving_default`` of a SavedModel loaded as TF Serving loads it, on uint8 images."""
    outputs = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images, tf.uint8))
    return {k: v.numpy() for k, v in outputs.items()}


def _conv_dtypes(path):
    """The dtypes (``T``) of the network's Conv2D ops in a SavedModel's serving graph and its functions."""
    graph = tf.saved_model.load(path).signatures["serving_default"].graph.as_graph_def()
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return {
        tf.as_dtype(n.attr["T"].type).name
        for n in nodes
        if n.op == "Conv2D" and "group_statistics" not in n.name and "dgqp" not in n.name
    }


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_lower_precision_saved_model_detects_what_float32_does(precision_exports, val_images, precision):
    expected = _serve(precision_exports["float32"], val_images)
    got = _serve(precision_exports[precision], val_images)
    assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in expected.items()}
    compared = 0
    for i in range(len(val_images)):
        n_e, n_g = int(expected["num_detections"][i]), int(got["num_detections"][i])
        keep = expected["scores"][i, :n_e] > CONFIDENT
        # The float32 export's confident detections, in its ranking order, are the lower
        # precision's top ones: same classes, same order.
        top = int(keep.sum())
        compared += top
        np.testing.assert_array_equal(got["category_ids"][i, :top], expected["category_ids"][i, :top])
        np.testing.assert_array_equal(got["labels"][i, :top], expected["labels"][i, :top])
        assert n_g >= top
        np.testing.assert_allclose(got["boxes"][i, :top], expected["boxes"][i, :top], atol=BOX_ATOL[precision])
        np.testing.assert_allclose(got["scores"][i, :top], expected["scores"][i, :top], atol=SCORE_ATOL[precision])
    assert compared >= len(val_images)  # a trained model: at least one confident object an image


def test_the_saved_models_compute_in_their_precision(precision_exports):
    for precision, path in precision_exports.items():
        assert _conv_dtypes(path) == {precision}
        assert read_metadata(path)["precision"] == precision


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_load_detector_reads_the_precision_and_detects(precision_exports, val_images, precision):
    detector = load_detector(precision_exports[precision])
    assert detector.metadata["precision"] == precision
    assert detector.format == "saved_model" and detector.precision == precision
    reference = load_detector(precision_exports["float32"])
    assert reference.precision == "float32"
    got, expected = detector.detect(val_images[0]), reference.detect(val_images[0])
    keep = expected["scores"] > CONFIDENT
    assert keep.any()
    top = int(keep.sum())
    np.testing.assert_array_equal(got["category_ids"][:top], expected["category_ids"][:top])
    np.testing.assert_allclose(got["boxes"][:top], expected["boxes"][:top], atol=BOX_ATOL[precision])


def test_other_formats_refuse_a_lower_precision(trained, tmp_path):
    model, _ = trained
    for export_format in ("tflite", "onnx"):
        with pytest.raises(
            ValueError, match=f"precision='bfloat16' applies to the saved_model format only; {export_format}"
        ):
            export_model(model, export_format, str(tmp_path / export_format), precision="bfloat16")
        assert not os.path.exists(tmp_path / export_format)  # refused before any work
    with pytest.raises(ValueError, match=r"Unknown precision 'bf16'; use one of \('float32', 'bfloat16', 'float16'\)"):
        export_model(model, "saved_model", str(tmp_path / "saved_model"), precision="bf16")
    assert not os.path.exists(tmp_path / "saved_model")


def test_export_command_writes_a_bfloat16_saved_model(trained, val_images, tmp_path, capsys):
    _, model_path = trained
    out = str(tmp_path / "exported")
    argv = ["export", "--model", model_path, "--format", "saved_model", "--precision", "bfloat16", "--out", out]
    assert main(argv) == 0
    path = os.path.join(out, "gfocal", "1")
    assert "Exported saved_model (bfloat16) in " in capsys.readouterr().out
    assert read_metadata(path)["precision"] == "bfloat16" and _conv_dtypes(path) == {"bfloat16"}
    outputs = _serve(path, val_images[:2])
    assert outputs["num_detections"].shape == (2,) and np.all(outputs["scores"][:, 0] > CONFIDENT)


def test_export_command_notes_precision_is_for_saved_model_only(trained, tmp_path, capsys):
    _, model_path = trained
    # int8 without calibration data stops the command after its notes, before any export work.
    argv = ["--model", model_path, "--format", "tflite", "--quantize", "int8", "--precision", "float16"]
    assert main(["export", *argv, "--out", str(tmp_path)]) == 2
    assert (
        "Note: --precision float16 applies to --format saved_model only; ignored for tflite." in capsys.readouterr().out
    )
    # The default says nothing.
    argv[-1] = "float32"
    assert main(["export", *argv, "--out", str(tmp_path)]) == 2
    assert "--precision" not in capsys.readouterr().out


def test_export_precision_choices_come_from_the_library():
    from keras_gfocal.cli import build_parser
    from keras_gfocal.export import PRECISIONS

    commands = build_parser()._subparsers._group_actions[0].choices
    flag = {a.dest: a for a in commands["export"]._actions}["precision"]
    assert tuple(flag.choices) == PRECISIONS == ("float32", "bfloat16", "float16") and flag.default == "float32"
    assert "SavedModel only" in flag.help and "NMS stay float32" in flag.help
