"""Deterministic stand-in weights for the reference-parity tests (NumPy only).

The reference fixtures under ``tests/fixtures/`` were computed by the real PyTorch reference
modules (torchvision's ResNet-50, MMDetection's ResNet + FPN + GFL head) with every tensor of
their ``state_dict`` replaced by :func:`seeded_state_dict`. A Keras model that loads the same
dictionary (through the checkpoint converter) must then reproduce the saved outputs, so the
tests need no PyTorch and no downloaded weights.

The rule, per key of the state dict (PyTorch / MMDetection naming, values float32 unless
said otherwise), drawn from ``np.random.RandomState(zlib.crc32(key.encode()))`` so that a
value depends only on its own key and shape, never on the order or the set of keys:

============================================  ==============================================
key                                           values
============================================  ==============================================
``*num_batches_tracked``                      int64 zeros
``*integral.project`` (GFL head buffer)       ``arange(n)`` (= ``linspace(0, reg_max, n)``)
``*.weight`` with 2 or more dims (conv,       ``standard_normal * sqrt(1 / fan_in)``,
linear; ``[out, in, kh, kw]`` / ``[out, in]``) ``fan_in = prod(shape[1:])``
``*.weight`` with 1 dim (BatchNorm, GroupNorm ``uniform(0.5, 1.0)``
affine scale)
``*.bias`` (conv, linear or norm shift)       ``standard_normal * 0.1``
``*running_mean``                             ``standard_normal * 0.1``
``*running_var``                              ``uniform(0.5, 1.5)``
``*scales.N.scale`` (per-level ``Scale``)     ``uniform(0.5, 1.5)``
============================================  ==============================================

Any other key raises ``ValueError`` (so a new kind of tensor is a deliberate decision, not a
silent guess). With these distributions every layer roughly preserves the variance of its
input, so activations stay finite and of order one through ResNet-50, the FPN and the head
(BatchNorm scales below one keep the 16 residual additions from blowing up).
"""

import json
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

ShapeSpec = Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]]


def _rng(key: str) -> np.random.RandomState:
    # The legacy RandomState stream is frozen by NumPy's compatibility policy, unlike Generator.
    return np.random.RandomState(zlib.crc32(key.encode("utf-8")))


def seeded_value(key: str, shape: Sequence[int]) -> np.ndarray:
    """Return the deterministic value of one state-dict entry (see the module docstring)."""
    shape = tuple(int(d) for d in shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    if key.endswith("integral.project"):
        if len(shape) != 1:
            raise ValueError(f"{key}: expected a 1-D projection vector, got shape {shape}")
        return np.arange(shape[0], dtype=np.float32)
    rng = _rng(key)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        values = rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
    elif leaf == "weight" and len(shape) == 1:
        values = rng.uniform(0.5, 1.0, shape)
    elif leaf == "bias":
        values = rng.standard_normal(shape) * 0.1
    elif leaf == "running_mean":
        values = rng.standard_normal(shape) * 0.1
    elif leaf == "running_var":
        values = rng.uniform(0.5, 1.5, shape)
    elif leaf == "scale" and ".scales." in "." + key:
        values = rng.uniform(0.5, 1.5, shape)
    else:
        raise ValueError(f"no seeding rule for state-dict key {key!r} of shape {shape}")
    return np.asarray(values, np.float32).reshape(shape)


def seeded_state_dict(shapes: ShapeSpec) -> "dict[str, np.ndarray]":
    """Deterministic values for a whole state dict.

    Args:
        shapes: the reference model's state-dict keys and shapes, in order: a mapping
            ``key -> shape`` or an iterable of ``(key, shape)`` pairs (e.g. the JSON list of
            ``[key, shape]`` pairs stored in the fixtures as ``shapes``).

    Returns:
        ``{key: np.ndarray}`` in the same order, float32 except ``num_batches_tracked`` (int64).
    """
    items = shapes.items() if isinstance(shapes, Mapping) else shapes
    return {key: seeded_value(key, shape) for key, shape in items}


def seeded_image(shape: Sequence[int], seed: int) -> np.ndarray:
    """A float32 standard-normal tensor of ``shape`` (an already normalised NHWC image batch)."""
    return np.random.RandomState(seed).standard_normal(tuple(shape)).astype(np.float32)


#: Where the reference fixtures live (``tests/fixtures/``).
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def load_fixture(name):
    """``{array name: np.ndarray}`` of the reference fixture ``tests/fixtures/<name>`` (an ``.npz``)."""
    with np.load(os.path.join(FIXTURES, name)) as data:
        return {k: data[k] for k in data.files}


def fixture_state_dict(fixture):
    """The seeded state dict of the reference model a fixture was computed with (its ``shapes``)."""
    return seeded_state_dict(json.loads(str(fixture["shapes"])))
