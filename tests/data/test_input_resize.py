"""``input_resize``: the one rule for how an image enters a model, and the metadata built from it."""

import types

import numpy as np
import pytest

from keras_gfocal.data import transforms
from keras_gfocal.data.input_resize import InputResize, input_resize

TRAINED = types.SimpleNamespace(image_size=(96, 160))
CONVERTED = types.SimpleNamespace(image_size=None)


def test_the_argument_then_the_model_canvas_then_the_reference_test_resize():
    assert input_resize(TRAINED, (64, 64)) == InputResize(image_size=(64, 64))
    assert input_resize(CONVERTED, [64, 80]) == InputResize(image_size=(64, 80))
    assert input_resize(TRAINED) == InputResize(image_size=(96, 160))
    assert input_resize(CONVERTED) == InputResize(test_scale=(800, 1333))
    assert input_resize(object()) == InputResize(test_scale=(800, 1333))  # no attribute at all


def test_a_fixed_shape_file_of_a_model_without_canvas_gets_the_reference_canvas_and_says_so():
    resize = input_resize(CONVERTED, fixed_canvas=True)
    assert resize == InputResize(image_size=(800, 1333), replaces_test_scale=(800, 1333))
    described = resize.metadata()
    assert described["image_size"] == [800, 1333] and described["canvas_size"] == [800, 1344]
    assert described["test_scale"] is None
    note = described["preprocessing"]["note"]
    assert "short side <= 800, long side <= 1333" in note and "portrait" in note
    # A model with a canvas keeps it, with no note.
    trained = input_resize(TRAINED, fixed_canvas=True)
    assert trained == InputResize(image_size=(96, 160)) and "note" not in trained.metadata()["preprocessing"]


def test_the_limits_are_read_when_called(monkeypatch):
    monkeypatch.setattr(transforms, "REFERENCE_TEST_SCALE", (64, 100))
    assert input_resize(CONVERTED).test_scale == (64, 100)


def test_metadata_of_each_rule():
    canvas = InputResize(image_size=(100, 150)).metadata()
    assert (canvas["image_size"], canvas["canvas_size"], canvas["test_scale"]) == ([100, 150], [128, 160], None)
    assert "fit image_size" in canvas["preprocessing"]["resize"]
    test = InputResize(test_scale=(800, 1333)).metadata()
    assert (test["image_size"], test["canvas_size"], test["test_scale"]) == (None, None, [800, 1333])
    assert "short side <= test_scale[0]" in test["preprocessing"]["resize"]
    assert "multiple of 32" in test["preprocessing"]["pad"]


@pytest.mark.parametrize("resize", [InputResize(image_size=(100, 150)), InputResize(test_scale=(64, 100))])
def test_metadata_round_trip(resize):
    assert InputResize.from_metadata(resize.metadata()) == InputResize(resize.image_size, resize.test_scale)


def test_metadata_of_an_earlier_release_has_a_canvas_only():
    assert InputResize.from_metadata({"image_size": [128, 128]}) == InputResize(image_size=(128, 128))


@pytest.mark.parametrize("fields", [{}, {"image_size": (64, 64), "test_scale": (64, 100)}])
def test_exactly_one_rule(fields):
    with pytest.raises(ValueError, match="exactly one of image_size and test_scale"):
        InputResize(**fields)


def test_dataset_options_and_preprocess_follow_the_rule():
    image = np.random.default_rng(0).integers(0, 256, (60, 36, 3), dtype=np.uint8)  # portrait
    assert InputResize(image_size=(64, 64)).dataset_options() == {"image_size": (64, 64)}
    assert InputResize(test_scale=(64, 100)).dataset_options() == {"test_scale": (64, 100)}
    # Test resize: scale min(100 / 60, 64 / 36) = 5 / 3 -> 100 x 60, padded to 128 x 64.
    canvas, scale = InputResize(test_scale=(64, 100)).preprocess(image)
    assert canvas.shape == (128, 64, 3) and np.isclose(float(scale), 5 / 3)
    # Fixed 64 x 64 canvas: scale min(64 / 60, 64 / 36) = 16 / 15 -> 64 x 38, padded to 64 x 64.
    canvas, scale = InputResize(image_size=(64, 64)).preprocess(image)
    assert canvas.shape == (64, 64, 3) and np.isclose(float(scale), 16 / 15)
