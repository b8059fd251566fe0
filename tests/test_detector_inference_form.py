"""``GFocalDetector.inference_form``: the folded detector that predict, evaluation, the
SavedModel export and ``load_detector`` run, with the unfolded model's detections."""

import zipfile

import h5py
import keras
import numpy as np
import tensorflow as tf
from narrow_resnet import NarrowResNet, randomize

from keras_gfocal import GFocalDetector
from keras_gfocal.export import export_model, load_detector
from keras_gfocal.export.runtime import KerasDetector
from keras_gfocal.image import normalize_image
from keras_gfocal.layers import TinyBackbone
from keras_gfocal.precision import with_precision

SIZE = 64


def narrow_detector(seed=0):
    keras.utils.set_random_seed(seed)
    model = GFocalDetector(
        NarrowResNet(),
        num_classes=2,
        fpn_channels=16,
        head_channels=16,
        stacked_convs=1,
        groups=4,
        score_threshold=0.0,
        image_size=(SIZE, SIZE),
    )
    model.build((None, SIZE, SIZE, 3))
    randomize(model.backbone, seed)
    return model


def images(seed=1, batch=2):
    return np.random.default_rng(seed).normal(size=(batch, SIZE, SIZE, 3)).astype("float32")


def assert_same_outputs(got, expected):
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-5 * np.abs(expected[key]).max())


def assert_same_detections(got, expected):
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-5)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)


def unfolded_detections(model, x):
    return {k: np.asarray(v) for k, v in model.decode(x, model(x, training=False)).items()}


def test_inference_form_folds_the_backbone_and_keeps_the_outputs():
    model = narrow_detector()
    form = model.inference_form()
    assert form is not model and form.backbone.fold_batch_norm
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in form._flatten_layers())
    assert {k: v for k, v in form.get_config().items() if k != "backbone"} == {
        k: v for k, v in model.get_config().items() if k != "backbone"
    }
    x = images()
    assert_same_outputs(form(x), model(x))


def test_inference_form_is_kept_refilled_and_not_part_of_the_model(tmp_path):
    model = narrow_detector()
    weights = len(model.weights)
    form = model.inference_form()
    assert model.inference_form() is form
    assert len(model.weights) == weights
    # Nor saved: the .keras file holds the model's own weights, and loads as it did.
    path = str(tmp_path / "model.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f) as h5:
        stored = []
        h5.visit(lambda name: stored.append(name) if isinstance(h5[name], h5py.Dataset) else None)
    assert len(stored) == weights and not any("inference_form" in name for name in stored)
    assert len(keras.saving.load_model(path).weights) == weights
    # Weights that change after the form was made (training) reach it on the next call.
    randomize(model.backbone, seed=7)
    model.head.cls_out.bias.assign(model.head.cls_out.bias + 1.0)
    x = images()
    assert model.inference_form() is form
    assert_same_outputs(form(x), model(x))


def test_a_backbone_without_batch_norm_is_its_own_inference_form():
    model = GFocalDetector(
        TinyBackbone(8, 1), num_classes=2, fpn_channels=16, head_channels=16, stacked_convs=1, groups=4
    )
    model.build((None, SIZE, SIZE, 3))
    assert model.inference_form() is model


def test_an_unbuilt_model_is_its_own_form_until_predict_builds_it():
    model = GFocalDetector(NarrowResNet(), num_classes=2, fpn_channels=16, head_channels=16, stacked_convs=1, groups=4)
    assert model.inference_form() is model
    x = images()
    model.predict(x, verbose=0)  # builds the model, unfolded
    assert model.built and model.inference_form() is not model
    assert_same_outputs(model.inference_form()(x), model(x))


def test_predict_runs_the_inference_form_with_the_same_detections():
    model = narrow_detector()
    x = images()
    expected = unfolded_detections(model, x)
    assert_same_detections({k: np.asarray(v) for k, v in model.predict(x, verbose=0).items()}, expected)
    assert model.__dict__["_inference_form"].model is model.inference_form()
    # The folded form's own predict, not the unfolded one's, ran.
    assert model.predict_function is None and model.inference_form().predict_function is not None


def test_saved_model_and_load_detector_run_the_folded_form(tmp_path):
    model = narrow_detector()
    pixels = np.random.default_rng(3).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    expected = KerasDetector(model).detect(pixels)
    path = export_model(model, "saved_model", str(tmp_path))
    loaded = tf.saved_model.load(path)
    names = [v.name for v in loaded.weights]
    # No BatchNorm statistics: the backbone's convs carry their folded biases instead.
    assert not any("moving_mean" in n or "moving_variance" in n for n in names)
    assert any(n.endswith("layer1_0/conv1/bias:0") for n in names)
    for detector in (load_detector(path), KerasDetector(model)):
        got = detector.detect(pixels)
        np.testing.assert_array_equal(got["labels"], expected["labels"])
        np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-5)
        np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)
    # KerasDetector itself: its detections are the unfolded model's decoded outputs.
    canvas = pixels.astype("float32")
    direct = unfolded_detections(model, normalize_image(canvas[None]))
    n = int(direct["num_detections"][0])
    np.testing.assert_allclose(expected["scores"], direct["scores"][0, :n], atol=1e-5)


def test_a_bfloat16_saved_model_is_folded_too(tmp_path):
    model = narrow_detector()
    pixels = np.random.default_rng(4).integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    path = export_model(model, "saved_model", str(tmp_path), precision="bfloat16")
    loaded = tf.saved_model.load(path)
    assert not any("moving_mean" in v.name for v in loaded.weights)
    assert load_detector(path).precision == "bfloat16"
    got = loaded.signatures["serving_default"](images=tf.constant(pixels))
    expected = model.decode(normalize_image(pixels.astype("float32")), model(normalize_image(pixels.astype("float32"))))
    # The bfloat16 network's scores: within a few bfloat16 roundings (2^-8) of float32's.
    np.testing.assert_allclose(got["scores"][:, :5], expected["scores"][:, :5], atol=4 * 2.0**-8)
    # A mixed-precision model is its own inference form: folding happens before the cast.
    mixed = with_precision(model, "bfloat16")
    assert mixed.inference_form() is mixed
