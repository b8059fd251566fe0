"""Which ops full-int8 TFLite keeps in float (``tflite._float_tensor_names``): found by the
types of the model's layers, whatever the layers are named."""

import keras

from keras_gfocal import GFocalDetector
from keras_gfocal.export import graphs, tflite
from keras_gfocal.layers import backbone, gfl_head


def _detector(**kwargs):
    model = GFocalDetector(
        backbone.TinyBackbone(base_width=8),
        num_classes=2,
        fpn_channels=16,
        head_channels=16,
        stacked_convs=1,
        groups=4,
        **kwargs,
    )
    model.build((1, 64, 64, 3))
    return model


def _keras_group_norm_tensors(scope):
    """``(name, shape)`` of the tensors of one Keras GroupNormalization call (4 groups of 4
    channels on a 2 x 2 map), as a float TFLite file names them, and the names expected float."""
    statistics = [
        (f"{scope}/moments/mean", [1, 1, 1, 4, 1]),
        (f"{scope}/moments/SquaredDifference", [1, 2, 2, 4, 4]),
        (f"{scope}/moments/variance", [1, 1, 1, 4, 1]),
        (f"{scope}/add", [1, 1, 1, 4, 1]),
        (f"{scope}/Rsqrt", [1, 1, 1, 4, 1]),
        (f"{scope}/Neg", [1, 1, 1, 4, 1]),
        (f"{scope}/mul", [1, 1, 1, 4, 4]),
        (f"{scope}/mul_1", [1, 1, 1, 4, 4]),
    ]
    maps = [
        (f"{scope}/Reshape", [1, 2, 2, 4, 4]),
        (f"{scope}/mul_2", [1, 2, 2, 4, 4]),
        (f"{scope}/add_2", [1, 2, 2, 4, 4]),
        (f"{scope}/Reshape_3", [1, 2, 2, 16]),
    ]
    return statistics + maps, [name for name, _ in statistics]


def test_keras_group_normalization_statistics_stay_float_whatever_its_name(monkeypatch):
    class Renamed(keras.layers.GroupNormalization):
        pass

    with monkeypatch.context() as patch:
        patch.setattr(gfl_head, "GroupNormalization", Renamed)
        model = _detector()
    head_norms = [x for x in model.head._flatten_layers() if isinstance(x, Renamed)]
    assert head_norms
    for x in head_norms:  # names without the "_gn" the old substring rule looked for
        x._name = x.name.replace("_gn", "_norm")
    scope = f"g_focal_detector/head/{head_norms[0].name}_5"
    tensors, expected = _keras_group_norm_tensors(scope)
    # a layer of another type under a look-alike name keeps its ops int8
    look_alike, _ = _keras_group_norm_tensors("g_focal_detector/head/other_norm0")
    conv = [(f"{scope}_conv/Conv2D", [1, 2, 2, 16])]
    assert tflite._float_tensor_names(model, tensors + look_alike + conv, nms=False) == expected


def test_detector_scopes_by_layer_type_and_postprocessing_only_with_nms():
    tensors = [
        ("m/head/cls_gn0/group_statistics/mean", [1, 1, 1, 16]),
        ("m/head/dgqp/distribution_statistics/Softmax", [1, 85, 4, 17]),
        ("m/head/joint_score/mul", [1, 85, 2]),
        (f"{graphs.POSTPROCESS_SCOPE}/NonMaxSuppressionV5", [100]),
        ("m/head/cls_conv0/Conv2D", [1, 8, 8, 16]),
        ("m/head/cls_gn0/mul", [1, 8, 8, 16]),
    ]
    v2 = _detector()
    assert tflite._float_tensor_names(v2, tensors, nms=True) == [name for name, _ in tensors[:4]]
    assert tflite._float_tensor_names(v2, tensors, nms=False) == [name for name, _ in tensors[:3]]
    # GFocalV1 has no DGQP: a "distribution_statistics" scope there is nobody's
    v1 = _detector(dgqp=False)
    assert tflite._float_tensor_names(v1, tensors, nms=False) == [tensors[0][0], tensors[2][0]]
