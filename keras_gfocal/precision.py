"""A detector that computes in bfloat16 or float16, for serving.

``with_precision(model, "bfloat16")`` rebuilds a ``GFocalDetector`` under
Keras' mixed policy (``"mixed_bfloat16"`` / ``"mixed_float16"``): the
variables stay float32 and hold the same values, the backbone, FPN and head
convolutions run in the lower precision. What ranks and places the boxes
stays float32: the head casts its outputs to float32, the DGQP and the joint
score ``sigmoid(cls) * quality`` are float32, GroupNorm takes its statistics in
float32, and ``decode`` (box decoding, top-k, NMS) casts what it reads to
float32.
"""

import keras

from keras_gfocal.constants import PRECISIONS
from keras_gfocal.layers.dgqp import DGQP

#: Keras' dtype policy of each precision.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

#: Layers that compute in float32 whatever the policy. The DGQP's input is the
#: float32 regression logits; a mixed policy would round them to the lower
#: precision on the way in (Keras casts a layer's float inputs to its compute
#: dtype), and its output scales every score.
FLOAT32_LAYERS = (DGQP,)


def check_precision(precision):
    """ValueError unless ``precision`` is one of ``PRECISIONS``; returns it."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use one of {PRECISIONS}.")
    return precision


def model_precision(model):
    """The ``PRECISIONS`` name of the dtype policy ``model`` computes in."""
    policy = model.dtype_policy.name
    for precision, name in POLICIES.items():
        if name == policy:
            return precision
    raise ValueError(f"The model computes under dtype policy {policy!r}, which is none of {sorted(POLICIES.values())}.")


def with_precision(model, precision):
    """The detector ``model`` computing in ``precision``, for inference and export.

    Args:
        model: a built ``GFocalDetector`` (any backbone); left unchanged.
        precision: one of ``PRECISIONS``: ``"float32"``, ``"bfloat16"`` or
            ``"float16"``.
    Returns:
        ``model`` itself for ``"float32"``; otherwise a new ``GFocalDetector``
        of the same class, configuration (class names, category ids,
        inference settings) and weights (copied; float32 variables), whose
        layers compute under ``POLICIES[precision]`` except ``FLOAT32_LAYERS``.
        Called on ``[B, H, W, 3]`` images it returns float32 ``cls_scores
        [B, A, C]`` and ``reg_logits [B, A, 4 * (reg_max + 1)]`` as ``model``
        does, and its ``decode`` works in float32.
    Raises:
        ValueError: an unknown ``precision``, or a model whose weights do not
            fit the rebuilt one (a class whose ``get_config`` misses a setting).
    """
    check_precision(precision)
    if precision == "float32":
        return model
    if not model.built:
        raise ValueError("with_precision needs a built model: call it on a batch of images or build() it first.")
    config = _without_dtypes(model.get_config())
    previous = keras.config.dtype_policy()
    # Every layer built from the config, and every sublayer its constructor
    # makes, takes the global policy unless it names its own dtype; sublayers
    # that must stay float32 (the DGQP's dense layers) name it.
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        clone = type(model).from_config(config)
        for layer in clone._flatten_layers(include_self=False):
            if isinstance(layer, FLOAT32_LAYERS):
                layer.dtype_policy = "float32"
        clone.build((None, None, None, 3))
    finally:
        keras.config.set_dtype_policy(previous)
    _copy_weights(model, clone)
    return clone


def _without_dtypes(config):
    """A copy of a serialised config with the ``"dtype"`` entry of every nested
    layer config removed, so that those layers take the global policy.

    A nested layer (e.g. the backbone) saves the policy it was built with
    (float32); rebuilt with that entry it would stay float32 under a mixed
    global policy.
    """
    if isinstance(config, dict):
        inner = {key: _without_dtypes(value) for key, value in config.items()}
        nested = inner.get("config")
        if "class_name" in inner and isinstance(nested, dict) and "dtype" in nested:
            inner["config"] = {key: value for key, value in nested.items() if key != "dtype"}
        return inner
    if isinstance(config, list):
        return [_without_dtypes(value) for value in config]
    return config


def _copy_weights(source, target):
    """Assigns ``source``'s weights to ``target``'s, in order, checking each shape."""
    if len(source.weights) != len(target.weights):
        raise ValueError(
            f"The rebuilt model has {len(target.weights)} weights, the original {len(source.weights)}: "
            f"{type(source).__name__}.get_config does not rebuild the same network."
        )
    for src, dst in zip(source.weights, target.weights):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"Weight {dst.path} of the rebuilt model has shape {dst.shape}, the original {src.shape}.")
        dst.assign(src.value)
