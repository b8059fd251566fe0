"""Building a chain of layers, each on the output shape of the one before."""


def build_chain(layers, input_shape):
    """Builds ``layers`` in order and returns the last one's output shape.

    Args:
        layers: Keras layers that run one after another.
        input_shape: the first layer's input shape, a tuple.
    Returns:
        The output shape of the last layer (``input_shape`` when ``layers`` is empty).
    """
    shape = tuple(input_shape)
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape
