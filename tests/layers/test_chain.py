"""keras_gfocal.layers.chain: each layer built on the shape the one before gives."""

import keras

from keras_gfocal.layers.chain import build_chain


def test_build_chain_passes_each_output_shape_on():
    layers = [
        keras.layers.Conv2D(4, 3, strides=2, padding="same"),
        keras.layers.ReLU(),
        keras.layers.Conv2D(6, 1),
    ]
    assert build_chain(layers, [2, 16, 12, 3]) == (2, 4 * 2, 3 * 2, 6)
    assert all(layer.built for layer in layers)
    assert layers[0].kernel.shape == (3, 3, 3, 4)
    assert layers[2].kernel.shape == (1, 1, 4, 6)  # built on the first conv's 4 channels


def test_build_chain_of_nothing_is_the_input_shape():
    assert build_chain([], [1, 5, 5, 2]) == (1, 5, 5, 2)
