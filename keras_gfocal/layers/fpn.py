"""Feature Pyramid Network producing P3-P7."""

import keras
from keras import ops


def upsample_nearest_2x(x):
    """``[B, H, W, C]`` -> ``[B, 2H, 2W, C]``, each pixel repeated 2 x 2 (nearest).

    What ``UpSampling2D(2)`` computes, without its rank-5 repeats (which the
    TFLite GPU delegate refuses): the channels doubled and read as twice the
    width, then the rows doubled and read as twice the height; two
    concatenations and two reshapes of rank-4 tensors.
    """
    shape = ops.shape(x)
    height = x.shape[1] if x.shape[1] is not None else shape[1]
    width = x.shape[2] if x.shape[2] is not None else shape[2]
    channels = x.shape[3]
    x = ops.reshape(ops.concatenate([x, x], axis=-1), (-1, height, 2 * width, channels))
    return ops.reshape(ops.concatenate([x, x], axis=2), (-1, 2 * height, 2 * width, channels))


@keras.saving.register_keras_serializable(package="keras_gfocal")
class FPN(keras.layers.Layer):
    """FPN over C3-C5 with two extra levels computed from the P5 output.

    Laterals are 1x1 convs, the top-down path adds nearest-upsampled coarser
    levels (``upsample_nearest_2x``), and a 3x3 conv smooths each merged map.
    P6 is a 3x3 stride-2 conv on the output P5 and P7 the same directly on
    P6, with no ReLU between ("extra convs on output", as the GFL reference).
    The stride-2 convs pad one pixel on every side as PyTorch's ``padding=1``
    does (Keras ``"same"`` would pad only after, shifting P6 and P7 by one
    input pixel). Every conv has a bias and its own Xavier-uniform kernel.

    Args:
        channels: output width of every level (256 in the reference).
    Input: ``[C3, C4, C5]`` at strides 8, 16, 32 (each twice the size of the next).
    Output: ``[P3, P4, P5, P6, P7]``, each with ``channels`` channels.
    """

    def __init__(self, channels=256, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        # A string initializer gives each layer an instance (and a seed) of its own.
        self.laterals = [
            keras.layers.Conv2D(channels, 1, kernel_initializer="glorot_uniform", name=f"lateral_c{i}")
            for i in (3, 4, 5)
        ]
        self.smooth = [
            keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer="glorot_uniform", name=f"output_p{i}")
            for i in (3, 4, 5)
        ]
        self.extra_pad = keras.layers.ZeroPadding2D(1, name="extra_pad")
        self.p6 = keras.layers.Conv2D(channels, 3, strides=2, kernel_initializer="glorot_uniform", name="extra_p6")
        self.p7 = keras.layers.Conv2D(channels, 3, strides=2, kernel_initializer="glorot_uniform", name="extra_p7")

    def build(self, input_shapes):
        for conv, shape in zip(self.laterals, input_shapes):
            conv.build(shape)
        for conv, shape in zip(self.smooth, input_shapes):
            conv.build(tuple(shape[:-1]) + (self.channels,))
        shape = self.extra_pad.compute_output_shape(tuple(input_shapes[2][:-1]) + (self.channels,))
        self.p6.build(shape)
        self.p7.build(self.extra_pad.compute_output_shape(self.p6.compute_output_shape(shape)))

    def call(self, features):
        laterals = [conv(f) for conv, f in zip(self.laterals, features)]
        for i in (2, 1):
            laterals[i - 1] = laterals[i - 1] + upsample_nearest_2x(laterals[i])
        outputs = [conv(x) for conv, x in zip(self.smooth, laterals)]
        p6 = self.p6(self.extra_pad(outputs[-1]))
        p7 = self.p7(self.extra_pad(p6))
        return outputs + [p6, p7]

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
