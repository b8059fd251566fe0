"""Frozen BatchNorms folded into the convs before them: a backbone's inference form.

The reference runs every backbone BatchNorm in inference mode, so each is a per-channel
affine map ``y = x * s + t`` with ``s = gamma / sqrt(moving_variance + epsilon)`` and
``t = beta - moving_mean * s``, applied to a conv's output. Scaling that conv's kernel by ``s``
along its output channels and giving it the bias ``t`` computes the same ``y`` in the conv
itself, where TensorFlow fuses the bias (and a ReLU after it) into the convolution: two
elementwise passes over every backbone map (three with the ReLU) are gone. Training keeps the
unfolded layers, whose ``gamma`` and ``beta`` train.
"""

import keras
import numpy as np


def frozen_batch_norm_affine(bn):
    """A BatchNorm in inference mode as the per-channel map ``x * s + t`` it computes.

    Args:
        bn: a built ``keras.layers.BatchNormalization`` with ``scale`` and ``center``.
    Returns:
        ``(s, t)``, each ``[C]``: ``s = gamma / sqrt(moving_variance + epsilon)`` and
        ``t = beta - moving_mean * s``, computed from the layer's variables (so gradients reach
        ``gamma`` and ``beta`` through them).
    """
    scale = bn.gamma * keras.ops.rsqrt(bn.moving_variance + bn.epsilon)
    return scale, bn.beta - bn.moving_mean * scale


def _relative_path(variable, root):
    """A variable's path below ``root``, the same in both forms of a layer (a layer built
    inside a detector has the detector's name in front)."""
    prefix = root.name + "/"
    return variable.path[variable.path.index(prefix) + len(prefix) :]


def can_fold(backbone):
    """Whether ``backbone`` has BatchNorms to fold: one of the ResNet family, not folded yet."""
    return hasattr(backbone, "conv_batch_norm_pairs") and not backbone.fold_batch_norm


def fold_batch_norms(backbone, into=None):
    """The folded (inference) form of a trained backbone.

    Args:
        backbone: a built backbone for which ``can_fold`` holds (``ResNetBackbone``,
            ``ResNeXtBackbone``, ``Res2NetBackbone``): it lists its ``conv_batch_norm_pairs()``
            and takes a ``fold_batch_norm`` constructor argument.
        into: a folded form made by an earlier call, to refill with ``backbone``'s current
            weights instead of building a new one.
    Returns:
        a backbone of the same class with ``fold_batch_norm=True``, built, whose convs hold
        ``kernel * s`` and the bias ``bias * s + t`` (a conv without a bias counts 0) and whose
        other weights (deformable offsets) are copies: its outputs equal ``backbone``'s to
        float rounding.
    """
    if not can_fold(backbone):
        raise ValueError(f"{backbone.name} ({type(backbone).__name__}) has no BatchNorm to fold.")
    if not backbone.built:
        raise ValueError(f"fold_batch_norms needs a built backbone; build {backbone.name} (or its detector) first.")
    folded = into
    if folded is None:
        folded = type(backbone).from_config({**backbone.get_config(), "fold_batch_norm": True})
        folded.build((None, None, None, 3))
    pairs = backbone.conv_batch_norm_pairs()
    folded_convs = [conv for conv, _ in folded.conv_batch_norm_pairs()]
    if len(pairs) != len(folded_convs):
        raise ValueError(f"{backbone.name}: {len(pairs)} convs against {len(folded_convs)} in its folded form.")
    assigned = set()
    for (conv, bn), target in zip(pairs, folded_convs):
        kernel = conv.kernel.numpy()
        bias = conv.bias.numpy() if conv.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
        if bn is not None:
            scale, shift = (np.asarray(v) for v in frozen_batch_norm_affine(bn))
            kernel, bias = kernel * scale, bias * scale + shift
        target.kernel.assign(kernel)
        target.bias.assign(bias)
        assigned.update((id(target.kernel), id(target.bias)))
    originals = {_relative_path(v, backbone): v for v in backbone.weights}
    for variable in folded.weights:
        if id(variable) not in assigned:
            variable.assign(originals[_relative_path(variable, folded)])
    return folded
