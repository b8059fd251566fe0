"""The Distribution-Guided Quality Predictor (DGQP) of GFocalV2."""

import keras
from keras import ops

from keras_gfocal.distributions import distribution_statistics, top_k_probabilities

STATISTICS_SCOPE = "distribution_statistics"


def normal_init():
    """A new N(0, 0.01) initializer: the reference's head init.

    One per layer: in Keras 3 an unseeded initializer instance draws the same
    values on every call, so a shared one would start every layer of a shape
    with the same kernel.
    """
    return keras.initializers.RandomNormal(stddev=0.01)


@keras.saving.register_keras_serializable(package="keras_gfocal")
class DGQP(keras.layers.Layer):
    """Predicts localisation quality from the shape of the edge distributions.

    For each of the four edges the softmax over its ``reg_max + 1`` bins is
    taken; its ``topk`` largest probabilities (descending) and, if
    ``add_mean``, their mean form ``topk + 1`` statistics. The ``4 * (topk + 1)``
    statistics (edge-major) go through ``Dense(hidden_units) -> ReLU ->
    Dense(1) -> sigmoid`` (the reference's two 1x1 convs).

    Built for the TFLite GPU delegate: the top-k is a compare-exchange network
    of MAXIMUM/MINIMUM ops (``keras_gfocal.distributions.sorted_top_k``), exact, instead of TOPK_V2; the
    mean, linear in the top-k values, is folded into the hidden layer's
    weights (its kernel row for the mean, divided by ``topk``, added to the
    rows of the values it averages) instead of a MEAN over channels; the two
    layers run as 1x1 convolutions. The weights keep the reference layout
    (``hidden`` ``[4 (topk + 1), hidden_units]``, ``out`` ``[hidden_units, 1]``),
    and the outputs equal the unfolded formula to float rounding; training
    gradients are the same.

    Args:
        reg_max: largest bin index ``n``; inputs have ``4 * (n + 1)`` channels.
        topk: number of top probabilities per edge (paper: 4).
        add_mean: append the mean of the top-k values (paper: True).
        hidden_units: width of the hidden layer (paper: 64).
    Input: ``[..., 4 * (reg_max + 1)]`` regression logits.
    Output: ``[..., 1]`` float32 quality in ``(0, 1)``.
    """

    def __init__(self, reg_max=16, topk=4, add_mean=True, hidden_units=64, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= topk <= reg_max + 1:
            raise ValueError(f"DGQP topk must be in [1, reg_max + 1 = {reg_max + 1}], got {topk}.")
        self.reg_max = reg_max
        self.topk = topk
        self.add_mean = add_mean
        self.hidden_units = hidden_units
        self.hidden = keras.layers.Dense(
            hidden_units, activation="relu", kernel_initializer=normal_init(), dtype="float32", name="hidden"
        )
        self.out = keras.layers.Dense(1, kernel_initializer=normal_init(), dtype="float32", name="out")

    @property
    def num_features(self):
        return 4 * (self.topk + int(self.add_mean))

    def build(self, input_shape):
        self.hidden.build((None, self.num_features))
        self.out.build((None, self.hidden_units))

    def _top_k(self, reg_logits):
        """``[..., 4, topk]``: each edge's top-k probabilities, largest first."""
        # Full-int8 TFLite keeps the ops named STATISTICS_SCOPE in float (`export.tflite`).
        with keras.name_scope(STATISTICS_SCOPE):
            return top_k_probabilities(ops.cast(reg_logits, "float32"), self.reg_max, self.topk)

    def statistics(self, reg_logits):
        """The ``[..., 4 * (topk + add_mean)]`` features the MLP reads (the reference's layout)."""
        with keras.name_scope(STATISTICS_SCOPE):
            return distribution_statistics(ops.cast(reg_logits, "float32"), self.reg_max, self.topk, self.add_mean)

    def _hidden_kernel(self):
        """The hidden kernel over the top-k values alone, the mean's rows folded in."""
        kernel = ops.cast(self.hidden.kernel, "float32")
        if not self.add_mean:
            return kernel
        per_edge = ops.reshape(kernel, (4, self.topk + 1, self.hidden_units))
        folded = per_edge[:, : self.topk] + per_edge[:, self.topk :] / self.topk
        return ops.reshape(folded, (4 * self.topk, self.hidden_units))

    def call(self, reg_logits):
        top = self._top_k(reg_logits)
        shape = ops.shape(reg_logits)
        # The MLP as 1x1 convolutions of a [1, N, 1, 4 topk] map: in TFLite
        # files CONV_2D, which the GPU delegate takes in every format
        # (dynamic-range files mark every FULLY_CONNECTED with a version it
        # refuses).
        features = ops.reshape(top, (1, -1, 1, 4 * self.topk))
        kernel = ops.reshape(self._hidden_kernel(), (1, 1, 4 * self.topk, self.hidden_units))
        hidden = ops.relu(ops.conv(features, kernel) + ops.cast(self.hidden.bias, "float32"))
        kernel = ops.reshape(ops.cast(self.out.kernel, "float32"), (1, 1, self.hidden_units, 1))
        quality = ops.sigmoid(ops.conv(hidden, kernel) + ops.cast(self.out.bias, "float32"))
        return ops.reshape(quality, tuple(shape[:-1]) + (1,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {
            **super().get_config(),
            "reg_max": self.reg_max,
            "topk": self.topk,
            "add_mean": self.add_mean,
            "hidden_units": self.hidden_units,
        }
