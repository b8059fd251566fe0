"""A learnable scalar multiplier."""

import keras


@keras.saving.register_keras_serializable(package="keras_gfocal")
class Scale(keras.layers.Layer):
    """Multiplies its input by one learnable scalar (the per-level regression scale).

    Args:
        initial_value: starting value of the scalar (1.0 in the reference).
    Input and output: any shape.
    """

    def __init__(self, initial_value=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_value),
            trainable=True,
        )

    def call(self, inputs):
        return inputs * keras.ops.cast(self.scale, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "initial_value": self.initial_value}
