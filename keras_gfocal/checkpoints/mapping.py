"""Assigning a PyTorch state dict to Keras variables, all or nothing.

A converter lists ``(checkpoint key, variable, transform)`` rows; ``assign_all``
checks every row and the keys nobody asked for before it writes anything, so a
checkpoint that does not fit the model leaves the model untouched and the
error names the first offending keys.
"""

import numpy as np

from keras_gfocal.checkpoints.pth import CheckpointError

#: How many offending keys an error names.
_SHOWN = 5


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys, shapes or values do not fit the model (a ``CheckpointError``,
    hence a ``ValueError``)."""


def conv_kernel(value):
    """PyTorch conv weight ``[out, in, kh, kw]`` -> Keras kernel ``[kh, kw, in, out]``."""
    return np.transpose(value, (2, 3, 1, 0))


def dense_kernel_from_1x1(value):
    """PyTorch 1x1 conv weight ``[out, in, 1, 1]`` -> Keras Dense kernel ``[in, out]``."""
    return np.transpose(value.reshape(value.shape[:2]), (1, 0))


def batch_norm_rows(prefix, layer):
    """Rows for a torch BatchNorm2d at ``prefix`` (``num_batches_tracked`` is ignored by the caller)."""
    return [
        (f"{prefix}.weight", layer.gamma, None),
        (f"{prefix}.bias", layer.beta, None),
        (f"{prefix}.running_mean", layer.moving_mean, None),
        (f"{prefix}.running_var", layer.moving_variance, None),
    ]


def conv_rows(prefix, layer):
    """Rows for a torch Conv2d at ``prefix`` (its bias only if the Keras conv has one)."""
    rows = [(f"{prefix}.weight", layer.kernel, conv_kernel)]
    if layer.use_bias:
        rows.append((f"{prefix}.bias", layer.bias, None))
    return rows


def _named(keys, what):
    keys = sorted(keys)
    more = f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{what}: {', '.join(keys[:_SHOWN])}{more}"


def assign_all(state_dict, rows, source, ignore=lambda key: key.endswith("num_batches_tracked")):
    """Assigns ``state_dict`` to variables along ``rows``, or raises naming what does not fit.

    Shapes are compared before any value is converted to float32, so a broadcast (stride-0)
    view of the wrong shape is refused without being expanded.

    Args:
        state_dict: ``{key: np.ndarray}``.
        rows: ``(key, keras.Variable, transform or None)`` triples.
        source: what the state dict came from, for error messages.
        ignore: predicate for checkpoint keys that need no variable.
    Raises:
        CheckpointMismatchError: keys missing from the checkpoint, keys the
            model has no place for, shapes or ranks that differ, or values that are
            not real-valued arrays, each named.
    """
    problems = []
    missing = [key for key, _, _ in rows if key not in state_dict]
    if missing:
        problems.append(_named(missing, "missing from the checkpoint"))
    wanted = {key for key, _, _ in rows}
    extra = [key for key in state_dict if key not in wanted and not ignore(key)]
    if extra:
        problems.append(_named(extra, "not used by the model"))
    values = []
    wrong_shape = []
    not_numbers = []
    for key, variable, transform in rows:
        if key not in state_dict:
            continue
        value = state_dict[key]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            not_numbers.append(f"{key} ({getattr(value, 'dtype', type(value).__name__)})")
            continue
        # Shapes first, float32 last: a broadcast view is checked before anything is copied.
        try:
            value = value if transform is None else transform(value)
        except (ValueError, IndexError) as error:  # a transform meeting a rank it does not expect
            wrong_shape.append(f"{key} {tuple(value.shape)} (model expects {tuple(variable.shape)}: {error})")
            continue
        if tuple(value.shape) != tuple(variable.shape):
            if value.size == 1 and variable.shape == ():  # torch scalars saved as [1]
                value = value.reshape(())
            else:
                wrong_shape.append(f"{key} {tuple(state_dict[key].shape)} (model expects {tuple(variable.shape)})")
                continue
        values.append((variable, np.asarray(value, np.float32)))
    if wrong_shape:
        problems.append(_named(wrong_shape, "shapes that differ"))
    if not_numbers:
        problems.append(_named(not_numbers, "not real-valued tensors"))
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit the model; " + "; ".join(problems) + ".")
    for variable, value in values:
        variable.assign(value)
