"""The Distribution-Guided Quality Predictor (DGQP) of GFocalV2."""

import keras
from keras import ops


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

    def statistics(self, reg_logits):
        """The ``[..., 4 * (topk + add_mean)]`` features the MLP reads."""
        reg_logits = ops.cast(reg_logits, "float32")
        shape = ops.shape(reg_logits)
        probs = ops.softmax(ops.reshape(reg_logits, tuple(shape[:-1]) + (4, self.reg_max + 1)), axis=-1)
        top, _ = ops.top_k(probs, k=self.topk, sorted=True)
        if self.add_mean:
            top = ops.concatenate([top, ops.mean(top, axis=-1, keepdims=True)], axis=-1)
        return ops.reshape(top, tuple(shape[:-1]) + (self.num_features,))

    def call(self, reg_logits):
        return ops.sigmoid(self.out(self.hidden(self.statistics(reg_logits))))

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
