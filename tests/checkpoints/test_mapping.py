"""``assign_all``: a state dict goes into the variables whole, or not at all."""

import keras
import numpy as np
import pytest

from keras_gfocal.checkpoints import CheckpointMismatchError
from keras_gfocal.checkpoints.mapping import assign_all, conv_kernel

BEFORE = {"a": np.full((2, 3), -1.0, np.float32), "b": np.full((4,), -2.0, np.float32)}
CONV_BEFORE = np.full((1, 1, 2, 3), -3.0, np.float32)  # Keras [kh, kw, in, out]


@pytest.fixture
def variables():
    """Three variables in a known state, with the rows that name them (``c`` through a conv transform)."""
    made = {key: keras.Variable(value, name=key) for key, value in BEFORE.items()}
    made["c"] = keras.Variable(CONV_BEFORE, name="c")
    rows = [("a", made["a"], None), ("b", made["b"], None), ("c", made["c"], conv_kernel)]
    return made, rows


def _fitting():
    """A state dict that fits ``variables``: ``c`` in PyTorch's ``[out, in, kh, kw]``."""
    conv = np.arange(6, dtype=np.float32).reshape(3, 2, 1, 1)
    return {"a": np.ones((2, 3), np.float32), "b": np.arange(4, dtype=np.float64), "c": conv}


def test_a_fitting_state_dict_is_assigned_through_its_transforms(variables):
    made, rows = variables
    assign_all(_fitting(), rows, "fit.pth")
    np.testing.assert_array_equal(np.asarray(made["a"]), np.ones((2, 3)))
    np.testing.assert_array_equal(np.asarray(made["b"]), [0.0, 1.0, 2.0, 3.0])
    # [out=3, in=2, 1, 1] -> [1, 1, in, out]: element (o, i) lands at [0, 0, i, o].
    np.testing.assert_array_equal(np.asarray(made["c"])[0, 0], np.arange(6, dtype=np.float32).reshape(3, 2).T)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("c"), "missing from the checkpoint: c"),
        (lambda s: s.update(extra=np.zeros(1, np.float32)), "not used by the model: extra"),
        (lambda s: s.update(c=np.zeros((3, 2, 3, 3), np.float32)), r"shapes that differ: c \(3, 2, 3, 3\)"),
        (lambda s: s.update(c=np.zeros((3, 2), np.float32)), r"shapes that differ: c \(3, 2\)"),  # wrong rank
        (lambda s: s.update(c=np.array(["x"] * 6).reshape(3, 2, 1, 1)), "not real-valued tensors: c"),
    ],
    ids=["missing", "extra", "shape", "rank", "strings"],
)
def test_a_state_dict_that_does_not_fit_changes_no_variable(variables, change, message):
    # The bad entry is the last row, so a loader that wrote as it went would have written a and b.
    made, rows = variables
    state_dict = _fitting()
    change(state_dict)
    with pytest.raises(CheckpointMismatchError, match=r"^bad\.pth does not fit the model; " + ".*" + message):
        assign_all(state_dict, rows, "bad.pth")
    for key, value in BEFORE.items():
        np.testing.assert_array_equal(np.asarray(made[key]), value, err_msg=key)
    np.testing.assert_array_equal(np.asarray(made["c"]), CONV_BEFORE)
