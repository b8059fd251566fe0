"""Gradients for comparing two formulations of a layer in the layer tests."""

import tensorflow as tf


def input_and_weight_gradients(fn, x, upstream, weights):
    """Gradients of ``sum(fn(x) * upstream)`` with respect to ``x`` and each of ``weights``.

    Args:
        fn: a callable on ``x`` (a layer, or a function of it).
        x: the input tensor.
        upstream: the gradient arriving from above, ``fn(x)``'s shape.
        weights: the variables to differentiate by.
    Returns:
        A list: the gradient of ``x``, then one a weight.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(fn(x) * upstream)
    return tape.gradient(loss, [x, *weights])
