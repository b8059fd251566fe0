"""A detector with deformable convolutions through every float export.

The backbone is three real ``Bottleneck`` blocks, narrow, at a 64 x 64 canvas:
C3 plain, C4 deformable with grouped weights (a ResNeXt-DCN block), C5
deformable and modulated (DCNv2). The offset convs get seeded non-zero weights
and biases, so each DCN samples off the grid, at places that change from pixel
to pixel. Each export must give the Keras model's detections, checked as the
trained model's float exports are (``detection_match``). A grouped plain
convolution (a ResNeXt's 3x3) exports to SavedModel and TFLite; ONNX refuses it
with a message that says why.
"""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from detection_match import assert_close_detections
from PIL import Image

from keras_gfocal import GFocalDetector
from keras_gfocal.export import export_model, gpu_delegate, load_detector, tflite_op_names
from keras_gfocal.export.runtime import KerasDetector
from keras_gfocal.layers import Backbone, DeformableConv2D, GroupedConv2D
from keras_gfocal.layers.resnet import Bottleneck

CANVAS = (64, 64)
FLOAT_EXPORTS = {  # name -> (format, nms)
    "saved_model": ("saved_model", True),
    "onnx": ("onnx", True),
    "tflite_float32": ("tflite", True),
    "tflite_float32_nonms": ("tflite", False),
}


class SmallDeformableBackbone(Backbone):
    """A stride-4 stem conv, then one bottleneck per stride 8, 16, 32 (32 channels out each)."""

    def __init__(self, plain_groups=1, keras_grouped=False, **kwargs):
        super().__init__(**kwargs)
        self.stem = keras.layers.Conv2D(16, 3, strides=4, padding="same", name="stem")
        # Keras' own grouped conv (XLA on TensorFlow), which ONNX cannot take.
        self.keras_grouped = keras.layers.Conv2D(16, 1, groups=4, name="keras_grouped") if keras_grouped else None
        self.blocks = [
            Bottleneck(8, strides=2, downsample=True, inner_width=16, groups=plain_groups, name="c3"),
            Bottleneck(8, strides=2, downsample=True, inner_width=16, groups=4, deformable=True, name="c4"),
            Bottleneck(8, strides=2, downsample=True, deformable=True, modulated=True, name="c5"),
        ]
        self.output_channels = (32, 32, 32)

    def build(self, input_shape):
        self.stem.build(input_shape)
        shape = self.stem.compute_output_shape(input_shape)
        if self.keras_grouped is not None:
            self.keras_grouped.build(shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def call(self, images):
        x = self.stem(images)
        if self.keras_grouped is not None:
            x = self.keras_grouped(x)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


def small_dcn_detector(plain_groups=1, seed=0, keras_grouped=False):
    """The detector above with random weights, seeded offsets and a head confident enough to detect."""
    keras.utils.set_random_seed(seed)
    model = GFocalDetector(
        SmallDeformableBackbone(plain_groups, keras_grouped),
        num_classes=2,
        fpn_channels=16,
        head_channels=16,
        stacked_convs=1,
        groups=4,
        image_size=CANVAS,
    )
    model.build((None,) + CANVAS + (3,))
    rng = np.random.default_rng(seed)
    for layer in deformable_layers(model):
        offset = layer.conv_offset
        offset.kernel.assign(rng.normal(0.0, 0.3, offset.kernel.shape).astype("float32"))
        offset.bias.assign(rng.normal(0.0, 1.0, offset.bias.shape).astype("float32"))
    # The reference head starts at a 0.01 prior and flat distributions: with these, random
    # weights give dozens of boxes of different sizes and scores above 0.2.
    head = model.head
    head.cls_out.kernel.assign(rng.normal(0.0, 0.1, head.cls_out.kernel.shape).astype("float32"))
    head.cls_out.bias.assign(np.full(head.cls_out.bias.shape, 1.0, "float32"))
    head.reg_out.kernel.assign(rng.normal(0.0, 0.5, head.reg_out.kernel.shape).astype("float32"))
    head.reg_out.bias.assign(np.tile(-0.5 * np.arange(model.reg_max + 1), 4).astype("float32"))
    return model


def deformable_layers(model):
    return [x for x in model._flatten_layers() if isinstance(x, DeformableConv2D)]


def _images():
    """Two images, one of them not square (resizing and the way back to image pixels count too)."""
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((64, 64, 3), (48, 80, 3))]


@pytest.fixture(scope="module")
def dcn_model():
    return small_dcn_detector()


@pytest.fixture(scope="module")
def dcn_exports(dcn_model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dcn_exports"))
    return {name: export_model(dcn_model, fmt, out, nms=nms) for name, (fmt, nms) in FLOAT_EXPORTS.items()}


@pytest.fixture(scope="module")
def keras_detections(dcn_model):
    return [KerasDetector(dcn_model).detect(image) for image in _images()]


def test_offsets_are_non_zero_and_move(dcn_model):
    canvas = np.random.default_rng(3).normal(size=(1,) + CANVAS + (3,)).astype("float32")
    backbone = dcn_model.backbone
    x = backbone.stem(canvas)
    for block in backbone.blocks:
        if block.deformable:
            inner = keras.ops.relu(block.bn1(block.conv1(x), training=False))
            pad = block.conv2.padding
            offsets = np.asarray(
                block.conv2.conv_offset(keras.ops.pad(inner, [[0, 0], [pad, pad], [pad, pad], [0, 0]]))
            )
            steps = offsets[..., : 2 * 9]
            # off the grid (not whole pixels) and different from one output pixel to the next
            assert np.abs(steps - np.round(steps)).mean() > 0.1, block.name
            assert steps.std(axis=(1, 2)).mean() > 0.1, block.name
        x = block(x)
    # and they change what the detector sees
    with_offsets = [np.asarray(c) for c in backbone(canvas)]
    saved = [(x.conv_offset.kernel.numpy(), x.conv_offset.bias.numpy()) for x in deformable_layers(dcn_model)]
    try:
        for layer in deformable_layers(dcn_model):
            layer.conv_offset.kernel.assign(np.zeros(layer.conv_offset.kernel.shape, "float32"))
            layer.conv_offset.bias.assign(np.zeros(layer.conv_offset.bias.shape, "float32"))
        on_the_grid = [np.asarray(c) for c in backbone(canvas)]
    finally:
        for layer, (kernel, bias) in zip(deformable_layers(dcn_model), saved):
            layer.conv_offset.kernel.assign(kernel)
            layer.conv_offset.bias.assign(bias)
    np.testing.assert_allclose(with_offsets[0], on_the_grid[0])  # C3 has no DCN
    for deformed, plain in zip(with_offsets[1:], on_the_grid[1:]):
        assert np.abs(deformed - plain).max() > 0.1 * np.abs(plain).max()


@pytest.mark.parametrize("image_index", [0, 1])
@pytest.mark.parametrize("name", sorted(FLOAT_EXPORTS))
def test_float_exports_give_the_keras_detections(dcn_exports, keras_detections, name, image_index):
    expected = keras_detections[image_index]
    assert (expected["scores"] > 0.2).sum() >= 20  # enough detections for the comparison to mean something
    got = load_detector(dcn_exports[name]).detect(_images()[image_index])
    assert_close_detections(got, expected)
    assert got["edge_confidence"].shape == (len(got["scores"]), 4)


def test_saved_model_bytes_signature_gives_the_keras_detections(dcn_exports, keras_detections):
    image = _images()[1]
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    signature = tf.saved_model.load(dcn_exports["saved_model"]).signatures["detect_bytes"]
    out = signature(image_bytes=tf.constant([png.getvalue()]))
    n = int(out["num_detections"][0])
    got = {key: out[key][0, :n].numpy() for key in ("boxes", "scores", "category_ids")}
    assert_close_detections(got, keras_detections[1])


@pytest.mark.parametrize("name", ["tflite_float32", "tflite_float32_nonms"])
def test_tflite_is_builtin_ops_with_the_dcn_gather(dcn_exports, name):
    ops = tflite_op_names(dcn_exports[name])
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert "GATHER" in ops and "BATCH_MATMUL" in ops  # the sampling and the grouped DCN kernel
    assert ("NON_MAX_SUPPRESSION_V5" in ops) == (name == "tflite_float32"), ops


def test_onnx_opset_and_nms_inside(dcn_exports):
    import onnx

    model = onnx.load(dcn_exports["onnx"])
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert "NonMaxSuppression" in {n.op_type for n in model.graph.node}


def test_gpu_delegate_leaves_the_dcn_sampling_on_the_cpu(dcn_exports):
    report = gpu_delegate.check(dcn_exports["tflite_float32_nonms"])
    refused = {op.name for op in report.refused}
    assert "CONV_2D" not in refused and report.refused
    # each DCN's sampling splits the network: the delegate takes one piece, not every convolution
    compute = report.compute_ops()
    assert len(report.partitions) > 1
    assert 0 < sum(i in set(report.delegated) for i in compute) < len(compute)


@pytest.fixture(scope="module")
def grouped_model():
    return small_dcn_detector(plain_groups=4)


@pytest.mark.parametrize("export_format", ["tflite", "onnx"])
def test_grouped_plain_conv_exports(grouped_model, export_format, tmp_path):
    """The ResNeXt block's grouped 3x3 conv (``GroupedConv2D``) exports to TFLite and ONNX."""
    assert isinstance(grouped_model.backbone.blocks[0].conv2, GroupedConv2D)
    assert grouped_model.backbone.blocks[0].conv2.groups == 4
    path = export_model(grouped_model, export_format, str(tmp_path))
    if export_format == "tflite":
        assert not [op for op in tflite_op_names(path) if op.startswith("Flex") or op == "CUSTOM"]
    image = _images()[1]
    assert_close_detections(load_detector(path).detect(image), KerasDetector(grouped_model).detect(image))


def test_keras_grouped_conv_onnx_error_names_the_problem(tmp_path):
    model = small_dcn_detector(keras_grouped=True)
    path = tmp_path / "gfocal.onnx"
    message = r"Keras grouped convolutions .*keras_grouped.*layers\.GroupedConv2D computes the same"
    with pytest.raises(ValueError, match=message) as error:
        export_model(model, "onnx", str(tmp_path))
    assert "StatefulPartitionedCall" in str(error.value)
    assert not path.exists()  # no file that onnxruntime would refuse
