"""GroupNorm on rank-4 tensors, with statistics a mobile GPU computes."""

import keras
import numpy as np
from keras import ops

STATISTICS_SCOPE = "group_statistics"


@keras.saving.register_keras_serializable(package="keras_gfocal")
class GroupNormalization(keras.layers.Layer):
    """Group normalisation of ``[B, H, W, C]`` maps, equal to Keras' ``GroupNormalization``.

    The mean and variance of each group of ``C / groups`` channels are taken
    over height, width and the group's channels, the maps are normalised and
    scaled and shifted per channel (``gamma``, ``beta``), all in float32.
    Keras' layer reshapes to ``[B, H, W, groups, C / groups]`` and reduces over
    three of its axes; this one never leaves rank 4: a mean over height and
    width per channel, then an average over the channels of each group
    (every channel of a group covers the same H x W values, so the mean of
    their means is the group's mean), twice (mean, then the mean
    squared deviation, as ``tf.nn.moments``). A TFLite file of it holds MEAN
    over height and width, reshapes and 1x1 convolutions of ``[B, 1, G, C / G]``
    statistics, and elementwise ops: what the TFLite GPU delegate runs
    (``keras_gfocal.export.gpu_delegate``). Results equal Keras' layer to float
    rounding (summation order).

    The class name, weight names and shapes are Keras' (``gamma``, ``beta``, ``[C]``,
    in that order), so ``.keras`` files written with Keras' layer in the same
    place load into this one, and its config takes Keras' arguments.

    Args:
        groups: number of groups; ``-1`` for one group per channel.
        axis: the channel axis; only the last (``-1`` or 3) is supported.
        epsilon: added to the variance.
        center, scale: learn ``beta`` / ``gamma``.
        beta_initializer, gamma_initializer, beta_regularizer,
        gamma_regularizer, beta_constraint, gamma_constraint: as Keras'.
    Input: ``[B, H, W, C]``, ``C`` known and a multiple of ``groups``.
    Output: same shape and dtype.
    """

    def __init__(
        self,
        groups=32,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        if not isinstance(groups, int) or (groups <= 0 and groups != -1):
            raise ValueError(f"groups must be a positive int or -1, got {groups!r}.")
        if axis not in (-1, 3):
            raise ValueError(
                f"GroupNormalization normalises channels-last [B, H, W, C] maps (axis=-1), got axis={axis}."
            )
        super().__init__(**kwargs)
        self.supports_masking = True
        self.autocast = False
        self.groups = groups
        self.axis = axis
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"GroupNormalization expects [B, H, W, C] inputs, got shape {tuple(input_shape)}.")
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"GroupNormalization needs a known channel count, got shape {tuple(input_shape)}.")
        if self.groups == -1:
            self.groups = channels
        if channels < self.groups or channels % self.groups:
            raise ValueError(f"{channels} channels cannot be split into {self.groups} groups of equal size.")
        self.gamma = (
            self.add_weight(
                shape=(channels,),
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
            )
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(
                shape=(channels,),
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
            )
            if self.center
            else None
        )
        size = channels // self.groups
        self._reduce = np.full((1, 1, size, 1), 1.0 / size, "float32")
        self._expand = np.ones((1, 1, 1, size), "float32")

    def _group_mean(self, per_channel):
        """``[B, 1, 1, C]`` per-channel means -> each channel's group mean.

        With the groups on the width axis, ``[B, 1, G, C / G]``, a 1x1
        convolution with ``C / G`` weights of ``G / C`` averages each group, and
        one with ``C / G`` ones copies the mean back to its channels. 1x1
        convolutions rather than matrix products: TFLite's dynamic-range
        files mark every FULLY_CONNECTED with a version the GPU delegate
        refuses. The weights, far below 1024 values, stay float there (int8,
        the statistics would lose their precision).
        """
        channels = per_channel.shape[-1]
        size = channels // self.groups
        if size == 1:
            return per_channel
        grouped = ops.reshape(per_channel, (-1, 1, self.groups, size))
        means = ops.conv(grouped, ops.convert_to_tensor(self._reduce))
        grouped = ops.conv(means, ops.convert_to_tensor(self._expand))
        return ops.reshape(grouped, (-1, 1, 1, channels))

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        # The ops named STATISTICS_SCOPE compute the per-channel scale and
        # shift; full-int8 TFLite keeps them in float (`export.tflite`).
        with keras.name_scope(STATISTICS_SCOPE):
            mean = self._group_mean(ops.mean(x, axis=(1, 2), keepdims=True))
            variance = self._group_mean(ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True))
            inv = ops.rsqrt(variance + self.epsilon)
            if self.gamma is not None:
                inv = inv * ops.cast(self.gamma, "float32")
            # Keras' -mean * inv + beta, one op fewer, the same value.
            shift = ops.cast(self.beta, "float32") - mean * inv if self.beta is not None else -(mean * inv)
        return ops.cast(x * inv + shift, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "groups": self.groups,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
        }
