"""with_precision: a detector computing in bfloat16 / float16 with the float32 weights, its
joint score, decoding and NMS in float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal import GFocalDetector
from keras_gfocal.constants import PRECISIONS
from keras_gfocal.layers import Res2NetBackbone, ResNetBackbone, ResNeXtBackbone, TinyBackbone
from keras_gfocal.precision import POLICIES, check_precision, model_precision, with_precision
from keras_gfocal.presets import PRESETS

#: Unit roundoff (half the spacing of numbers in [1, 2)): bfloat16 keeps 8 significant bits, float16 11.
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11}
#: Convolutions on the tiny detector's longest path (backbone 10, FPN 2, head tower 2 and output 1),
#: each of whose outputs is rounded once to the lower precision.
ROUNDED_LAYERS = 15
IMAGE_SHAPE = (2, 64, 96, 3)


def _spread_weights(model, seed):
    """He-normal kernels and zero biases everywhere (norms as built): activations keep a
    scale near 1 through the network and the head's logits spread over several units
    around 0, as in a trained model, where the N(0, 0.01) initial head and its 0.01 prior
    give near-constant outputs."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith("bias"):
            weight.assign(np.zeros(weight.shape, "float32"))
        elif weight.path.endswith("kernel") and len(weight.shape) >= 2:
            fan_in = int(np.prod(weight.shape[:-1]))
            weight.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), weight.shape).astype("float32"))


def _tiny_detector(seed=0):
    keras.utils.set_random_seed(seed)
    model = GFocalDetector.from_preset(
        "gfocal_v2_tiny",
        num_classes=3,
        class_names=["a", "b", "c"],
        category_ids=[4, 9, 2],
        score_threshold=0.2,
        max_detections=30,
        image_size=(64, 96),
    )
    model.build(IMAGE_SHAPE)
    _spread_weights(model, seed)
    return model


@pytest.fixture(scope="module")
def tiny():
    return _tiny_detector()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).normal(size=IMAGE_SHAPE).astype("float32")


def _graph_ops(model, shape=(1, 64, 64, 3)):
    """The ops of ``decode(model(images))`` traced as one TensorFlow function."""
    function = tf.function(lambda x: model.decode(x, model(x, training=False)))
    return function.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph.get_operations()


def _is_network_conv(op):
    # GroupNorm's statistics and the DGQP's MLP are 1x1 convolutions that compute in float32.
    return op.type == "Conv2D" and "group_statistics" not in op.name and "dgqp" not in op.name


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_outputs_are_float32_and_as_close_to_float32s_as_the_precision_allows(tiny, images, precision):
    expected = tiny(images)
    got = with_precision(tiny, precision)(images)
    u = UNIT_ROUNDOFF[precision]
    for key in ("cls_scores", "reg_logits"):
        assert got[key].dtype == "float32"
        scale = float(np.max(np.abs(expected[key])))
        error = float(np.max(np.abs(np.asarray(got[key]) - np.asarray(expected[key]))))
        # Spread weights: the logits span units, so the errors measure the rounding, not a tiny scale.
        assert scale > (0.3 if key == "cls_scores" else 3.0), scale
        # Each rounded layer adds at most about u of the activations' scale (GroupNorm keeps it
        # near 1); float32 arithmetic would stay near 1e-6.
        assert error < ROUNDED_LAYERS * u * scale, (key, error, scale)
        assert error > u / 16 * scale, (key, error, scale)


def test_weights_are_copied_float32_and_the_settings_kept(tiny):
    for precision in ("bfloat16", "float16"):
        lower = with_precision(tiny, precision)
        assert type(lower) is GFocalDetector and lower is not tiny
        assert model_precision(lower) == precision and model_precision(tiny) == "float32"
        assert len(lower.weights) == len(tiny.weights) > 0
        for ours, theirs in zip(lower.weights, tiny.weights):
            assert ours.dtype == "float32"
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        # A copy: changing one model leaves the other alone.
        assert not any(ours.value is theirs.value for ours, theirs in zip(lower.weights, tiny.weights))
        assert lower.class_names == ["a", "b", "c"] and lower.category_ids == [4, 9, 2]
        assert lower.image_size == (64, 96) and lower.score_threshold == 0.2 and lower.max_detections == 30
        # Every layer, the backbone's included (its saved config names float32), computes in the
        # lower precision, but the DGQP and its dense layers.
        dgqp = {id(layer) for layer in lower.head.quality._flatten_layers()}
        policies = {layer.name: layer.dtype_policy.name for layer in lower._flatten_layers() if id(layer) not in dgqp}
        assert len(policies) > 20 and set(policies.values()) == {POLICIES[precision]}, policies
        assert {layer.dtype_policy.name for layer in lower.head.quality._flatten_layers()} == {"float32"}


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_convs_run_in_the_lower_precision_and_scores_decoding_nms_in_float32(tiny, precision):
    ops = _graph_ops(with_precision(tiny, precision))
    convs = [op for op in ops if _is_network_conv(op)]
    # backbone 10, FPN 3 lateral + 3 output + 2 extra levels, head 2 x 2 tower + 2 outputs, each over 5 levels
    assert len(convs) == 10 + 8 + 5 * 6
    assert {op.get_attr("T") for op in convs} == {tf.as_dtype(precision)}
    (nms,) = [op for op in ops if op.type == "NonMaxSuppressionV5"]
    assert [t.dtype for t in nms.inputs[:2]] == [tf.float32, tf.float32]
    joint = [op for op in ops if "joint_score" in op.name and op.type in ("Sigmoid", "Mul")]
    assert len(joint) == 2 * 5 and {op.outputs[0].dtype for op in joint} == {tf.float32}
    (top_k,) = [op for op in ops if op.type == "TopKV2"]
    assert top_k.inputs[0].dtype == tf.float32
    # The DGQP reads the float32 logits unrounded: no tensor of its own in the lower precision.
    dgqp = [op for op in ops if "/dgqp" in op.name]
    assert dgqp and all(t.dtype == tf.float32 for op in dgqp for t in [*op.inputs, *op.outputs] if t.dtype.is_floating)


def test_decoded_detections_follow_float32s(tiny, images):
    expected = tiny.decode(images, tiny(images))
    lower = with_precision(tiny, "bfloat16")
    got = lower.decode(images, lower(images))
    for key in ("boxes", "scores", "edge_confidence"):
        assert got[key].dtype == "float32"
    # The top detection of each image: same class, box within 2 px (of 64 x 96 images).
    assert int(np.min(expected["num_detections"])) > 0
    np.testing.assert_array_equal(np.asarray(got["category_ids"])[:, 0], np.asarray(expected["category_ids"])[:, 0])
    np.testing.assert_allclose(np.asarray(got["boxes"])[:, 0], np.asarray(expected["boxes"])[:, 0], atol=2.0)


def test_float32_is_the_model_itself(tiny):
    assert with_precision(tiny, "float32") is tiny


@pytest.mark.parametrize("bad", ["bf16", "mixed_bfloat16", "Float16", None])
def test_an_unknown_precision_names_itself_and_the_choices(tiny, bad):
    with pytest.raises(ValueError, match=r"Unknown precision .*\('float32', 'bfloat16', 'float16'\)") as err:
        with_precision(tiny, bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match="Unknown precision"):
        check_precision(bad)
    assert PRECISIONS == ("float32", "bfloat16", "float16")


def test_the_global_policy_is_left_as_it_was(tiny):
    assert keras.config.dtype_policy().name == "float32"
    with_precision(tiny, "bfloat16")
    assert keras.config.dtype_policy().name == "float32"
    keras.config.set_dtype_policy("mixed_float16")
    try:
        lower = with_precision(tiny, "bfloat16")
        assert keras.config.dtype_policy().name == "mixed_float16"
        assert model_precision(lower) == "bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")


class _UnbuildableDetector(GFocalDetector):
    """A detector whose rebuild fails, as a subclass with a broken ``from_config`` would."""

    @classmethod
    def from_config(cls, config):
        raise RuntimeError("cannot rebuild")


def test_the_global_policy_is_restored_when_the_rebuild_fails():
    model = _UnbuildableDetector(TinyBackbone(8), num_classes=2, fpn_channels=32, head_channels=32, stacked_convs=1)
    model.build((1, 64, 64, 3))
    with pytest.raises(RuntimeError, match="cannot rebuild"):
        with_precision(model, "float16")
    assert keras.config.dtype_policy().name == "float32"


def test_an_unbuilt_model_is_refused():
    model = GFocalDetector(TinyBackbone(8), num_classes=2, fpn_channels=32, head_channels=32, stacked_convs=1)
    with pytest.raises(ValueError, match="needs a built model"):
        with_precision(model, "bfloat16")


#: One backbone of each class the presets name, at depth 50 with the presets' deformable stages.
BACKBONES = {
    "TinyBackbone": lambda: TinyBackbone(16),
    "ResNetBackbone": lambda: ResNetBackbone(50, dcn_stages=(2, 3, 4)),
    "ResNeXtBackbone": lambda: ResNeXtBackbone(50, groups=8, base_width=4, dcn_stages=(3, 4)),
    "Res2NetBackbone": lambda: Res2NetBackbone(50, dcn_stages=(3, 4)),
}


def test_every_preset_backbone_class_is_covered():
    assert {preset["backbone"][0] for preset in PRESETS.values()} == set(BACKBONES)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_family_runs_in_bfloat16(backbone, images):
    keras.utils.set_random_seed(1)
    model = GFocalDetector(BACKBONES[backbone](), num_classes=3, fpn_channels=32, head_channels=32, stacked_convs=1)
    model.build(IMAGE_SHAPE)
    lower = with_precision(model, "bfloat16")
    expected, got = model(images), lower(images)
    for key in ("cls_scores", "reg_logits"):
        scale = float(np.max(np.abs(expected[key])))
        error = float(np.max(np.abs(np.asarray(got[key]) - np.asarray(expected[key]))))
        # Deeper than the tiny model (up to ~50 rounded layers), with BatchNorm in float32 between them.
        assert 50 * UNIT_ROUNDOFF["bfloat16"] * scale > error > UNIT_ROUNDOFF["bfloat16"] / 16 * scale, (
            key,
            error,
            scale,
        )
    convs = [op for op in _graph_ops(lower) if _is_network_conv(op)]
    assert convs and {op.get_attr("T") for op in convs} == {tf.bfloat16}
