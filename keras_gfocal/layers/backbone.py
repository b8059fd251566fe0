"""Backbones returning the C3, C4, C5 feature maps (strides 8, 16, 32)."""

import keras
from keras import ops

# keras.applications' ResNet weights were trained on caffe-style input (BGR,
# mean subtracted, not divided by std). Detector inputs carry the reference's
# RGB normalisation, so the backbone maps them back to what its weights expect.
_RGB_MEAN = (123.675, 116.28, 103.53)
_RGB_STD = (58.395, 57.12, 57.375)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_RESNET_OUTPUTS = {
    50: ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    101: ("conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}


@keras.saving.register_keras_serializable(package="keras_gfocal")
class ResNetBackbone(keras.layers.Layer):
    """ResNet-50/101 from ``keras.applications`` with the reference's freezing.

    The stem and stage 1 (``conv1_*``, ``conv2_*``) are frozen and every
    BatchNormalization runs in inference mode with frozen statistics and affine
    parameters, as the reference trains its detectors.

    Args:
        depth: 50 or 101.
        weights: ``"imagenet"``, a path to a weights file of the
            ``keras.applications`` model, or None (random init).
        frozen_stages: stages frozen counting the stem as part of stage 1;
            0 freezes nothing but BatchNorm, 1 is the reference.
    Input: ``[B, H, W, 3]`` images normalised with the reference's RGB mean/std,
        H and W multiples of 32.
    Output: list of three maps, ``[B, H/8, W/8, 512]``, ``[B, H/16, W/16, 1024]``,
        ``[B, H/32, W/32, 2048]``.
    """

    def __init__(self, depth=50, weights=None, frozen_stages=1, **kwargs):
        super().__init__(**kwargs)
        if depth not in _RESNET_OUTPUTS:
            raise ValueError(f"ResNetBackbone depth must be 50 or 101, got {depth!r}.")
        self.depth = depth
        self.weights_source = weights
        self.frozen_stages = frozen_stages
        builder = keras.applications.ResNet50 if depth == 50 else keras.applications.ResNet101
        full = builder(include_top=False, weights=weights, input_shape=(None, None, 3))
        self.network = keras.Model(
            full.input, [full.get_layer(name).output for name in _RESNET_OUTPUTS[depth]], name=f"resnet{depth}"
        )
        frozen_prefixes = ("conv1_", "pool1_") + tuple(f"conv{i + 1}_" for i in range(1, frozen_stages + 1))
        for layer in self.network.layers:
            if isinstance(layer, keras.layers.BatchNormalization) or (
                frozen_stages > 0 and layer.name.startswith(frozen_prefixes)
            ):
                layer.trainable = False
        self.output_channels = (512, 1024, 2048)

    def build(self, input_shape):
        self.network.build(input_shape)

    def call(self, images):
        x = ops.cast(images, "float32") * ops.array(_RGB_STD) + ops.array(_RGB_MEAN)
        x = x[..., ::-1] - ops.array(_CAFFE_BGR_MEAN)
        return self.network(ops.cast(x, self.compute_dtype), training=False)

    def get_config(self):
        # Weights travel in the saved model itself; rebuilding from config must
        # not try to download or read them again.
        return {**super().get_config(), "depth": self.depth, "weights": None, "frozen_stages": self.frozen_stages}


@keras.saving.register_keras_serializable(package="keras_gfocal")
class TinyBackbone(keras.layers.Layer):
    """A small conv + GroupNorm + ReLU backbone for CPU demos and tests.

    Five stride-2 stages of ``blocks_per_stage`` 3x3 convs, widths doubling
    from ``base_width``; returns the outputs of the stride 8, 16 and 32 stages.
    GroupNorm keeps it independent of batch size, so its outputs do not depend
    on how a batch is split across replicas.

    Input: ``[B, H, W, 3]``, H and W multiples of 32.
    Output: three maps with ``4, 8, 16 x base_width`` channels at strides 8, 16, 32.
    """

    def __init__(self, base_width=16, blocks_per_stage=2, **kwargs):
        super().__init__(**kwargs)
        self.base_width = base_width
        self.blocks_per_stage = blocks_per_stage
        self.stages = []
        for stage in range(5):
            width = base_width * 2**stage
            stage_layers = []
            for block in range(blocks_per_stage):
                stage_layers += [
                    keras.layers.Conv2D(
                        width, 3, strides=2 if block == 0 else 1, padding="same", use_bias=False,
                        name=f"stage{stage + 1}_conv{block + 1}",
                    ),
                    keras.layers.GroupNormalization(
                        groups=min(8, width), epsilon=1e-5, name=f"stage{stage + 1}_gn{block + 1}"
                    ),
                    keras.layers.ReLU(name=f"stage{stage + 1}_relu{block + 1}"),
                ]
            self.stages.append(stage_layers)
        self.output_channels = tuple(base_width * 2**s for s in (2, 3, 4))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for stage_layers in self.stages:
            for layer in stage_layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, images):
        x = images
        outputs = []
        for i, stage_layers in enumerate(self.stages):
            for layer in stage_layers:
                x = layer(x)
            if i >= 2:
                outputs.append(x)
        return outputs

    def get_config(self):
        return {**super().get_config(), "base_width": self.base_width, "blocks_per_stage": self.blocks_per_stage}
