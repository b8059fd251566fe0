"""The backbone contract, and a small backbone for CPU demos and tests.

A backbone is any serialisable ``keras.layers.Layer`` that follows ``Backbone``'s
contract; ``GFocalDetector(backbone=...)`` takes it as an object. Adding a
backbone is one file: subclass ``Backbone``, build the layers, set
``output_channels``, and register the class with
``@keras.saving.register_keras_serializable`` so ``.keras`` files reload it.
"""

import keras

from keras_gfocal.layers.chain import build_chain
from keras_gfocal.layers.group_norm import GroupNormalization


class Backbone(keras.layers.Layer):
    """Base class of GFocal backbones: what a detector may rely on.

    Input: ``[B, H, W, 3]`` float images, RGB normalised with the reference
        mean and std (``keras_gfocal.image.MEAN`` / ``STD``): exactly
        the batch the detector receives. H and W are multiples of 32. A
        backbone whose weights expect another input convention converts it in
        its own ``call``.
    Output: a list ``[C3, C4, C5]`` of feature maps at strides 8, 16 and 32,
        ``[B, H/8, W/8, output_channels[0]]`` and so on.

    Subclasses set ``output_channels`` (three ints) in ``__init__``, decide
    which of their weights train (the detector does not freeze anything) and
    run their BatchNormalization layers as they need. A backbone does not load
    pretrained weights itself: their converter, in ``keras_gfocal.pretrained``,
    fills its variables. ``get_config`` names no weights: they travel in the
    saved model.
    """

    output_strides = (8, 16, 32)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.output_channels = None

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]
        return [
            (batch, None if height is None else height // s, None if width is None else width // s, c)
            for s, c in zip(self.output_strides, self.output_channels)
        ]


@keras.saving.register_keras_serializable(package="keras_gfocal")
class TinyBackbone(Backbone):
    """A small conv + GroupNorm + ReLU backbone for CPU demos and tests.

    Five stride-2 stages of ``blocks_per_stage`` 3x3 convs, widths doubling
    from ``base_width``; returns the outputs of the stride 8, 16 and 32 stages.
    GroupNorm keeps it independent of batch size, so its outputs do not depend
    on how a batch is split across replicas. Not a reference part: it has no
    pretrained weights.

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
                        width,
                        3,
                        strides=2 if block == 0 else 1,
                        padding="same",
                        use_bias=False,
                        name=f"stage{stage + 1}_conv{block + 1}",
                    ),
                    GroupNormalization(groups=min(8, width), epsilon=1e-5, name=f"stage{stage + 1}_gn{block + 1}"),
                    keras.layers.ReLU(name=f"stage{stage + 1}_relu{block + 1}"),
                ]
            self.stages.append(stage_layers)
        self.output_channels = tuple(base_width * 2**s for s in (2, 3, 4))

    def build(self, input_shape):
        shape = input_shape
        for stage_layers in self.stages:
            shape = build_chain(stage_layers, shape)

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
