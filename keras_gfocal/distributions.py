"""The edge distributions of the regression output, in one place: each function
in TensorFlow / Keras ops (what the model, its exports and its loss run) and,
beside it, its NumPy twin (suffix ``_np``: what the analysis and the NumPy
post-processing of ``--no-nms`` exports run), computed in float64.

Each of the four box edges (l, t, r, b) is a discrete distribution over the
bins ``0 .. reg_max``; the regression logits hold them edge-major,
``[..., 4 * (reg_max + 1)]`` = ``[l0 .. l_n, t0 .. t_n, r0 .. r_n, b0 .. b_n]``.

* ``edge_probabilities``: logits ``[..., 4 (n + 1)]`` -> softmax over each
  edge's bins, ``[..., 4, n + 1]``;
* ``expectation``: probabilities ``[..., n + 1]`` -> ``sum_i p_i * i``,
  ``[...]``; ``distribution_expectation`` the two together, logits ->
  ``[..., 4]`` distances in stride units;
* ``edge_confidence``: logits -> the top-1 probability of each edge,
  ``[..., 4]``;
* ``top_k_probabilities``: logits -> each edge's ``k`` largest probabilities,
  largest first, ``[..., 4, k]`` (in TF by ``sorted_top_k``, a
  compare-exchange network of MAXIMUM / MINIMUM, no TOPK op, for the TFLite
  GPU delegate); ``distribution_statistics``: those and their mean, the
  ``[..., 4 (k + 1)]`` features the DGQP reads;
* ``softmax_np``: the NumPy softmax under all of them.
"""

import numpy as np
from keras import ops

# ---------------------------------------------------------------- TensorFlow


def edge_probabilities(reg_logits, reg_max=16):
    """Softmax over the bins of each edge.

    Args:
        reg_logits: ``[..., 4 * (reg_max + 1)]`` float, edge-major (l, t, r, b).
        reg_max: the largest bin ``n``.
    Returns:
        ``[..., 4, reg_max + 1]`` probabilities, of ``reg_logits``' dtype.
    """
    reg_logits = ops.convert_to_tensor(reg_logits)
    shape = ops.shape(reg_logits)
    return ops.softmax(ops.reshape(reg_logits, tuple(shape[:-1]) + (4, reg_max + 1)), axis=-1)


def expectation(probs):
    """The expected bin, ``sum_i probs_i * i`` over the last axis.

    Args:
        probs: ``[..., n + 1]`` probabilities of the bins ``0 .. n``.
    Returns:
        ``[...]``, of ``probs``' dtype.
    """
    probs = ops.convert_to_tensor(probs)
    bins = ops.cast(ops.arange(probs.shape[-1]), probs.dtype)
    return ops.sum(probs * bins, axis=-1)


def distribution_expectation(reg_logits, reg_max=16):
    """Expected distance per edge, ``sum_i softmax(logits)_i * i``.

    Args:
        reg_logits: ``[..., 4 * (reg_max + 1)]``, edge-major (l, t, r, b).
        reg_max: the largest bin ``n``.
    Returns:
        ``[..., 4]`` distances in stride units.
    """
    return expectation(edge_probabilities(reg_logits, reg_max))


def edge_confidence(reg_logits, reg_max=16):
    """Top-1 probability of each edge's distribution: a per-edge localisation
    confidence (close to 1 for a sharp distribution, ``1 / (reg_max + 1)`` for a
    flat one).

    Args:
        reg_logits: ``[..., 4 * (reg_max + 1)]``, edge-major (l, t, r, b).
        reg_max: the largest bin ``n``.
    Returns:
        ``[..., 4]``.
    """
    return ops.max(edge_probabilities(reg_logits, reg_max), axis=-1)


def sorting_network(n):
    """Comparators ``(i, j)``, ``i < j``, that sort ``n`` wires when each puts the larger value on ``i``.

    Batcher's odd-even merge sort on the next power of two, without the
    comparators that touch the missing wires (they would hold -inf and never
    move). For 4 wires: the optimal 5 comparators.

    Args:
        n: number of wires, ``>= 1``.
    Returns:
        list of ``(i, j)`` pairs, in the order to apply them.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return [(a, b) for a, b in pairs if b < n]


def bitonic_network(n):
    """Comparators that sort a bitonic sequence of ``n`` (a power of two) wires, larger first.

    Args:
        n: number of wires, a power of two.
    Returns:
        list of ``(i, j)`` pairs, in the order to apply them.
    """
    pairs, half = [], n // 2
    while half >= 1:
        pairs += [(i, i + half) for i in range(n) if (i // half) % 2 == 0]
        half //= 2
    return pairs


def _apply(wires, comparators):
    """Compare-exchange: the larger value to the first wire, the smaller to the second."""
    wires = list(wires)
    for i, j in comparators:
        wires[i], wires[j] = ops.maximum(wires[i], wires[j]), ops.minimum(wires[i], wires[j])
    return wires


def sorted_top_k(values, k):
    """The ``k`` largest entries of the last axis, largest first: what
    ``ops.top_k(values, k, sorted=True)[0]`` returns, with MAXIMUM, MINIMUM,
    slices and concatenations only (every value is one of the inputs, so the
    result is exact, ties included).

    The ``n`` entries are read as ``k`` columns of ``g = n // k`` entries
    (column ``i`` holds entries ``i * g .. i * g + g - 1``): a sorting network
    across the columns sorts the ``g`` groups ``{j, g + j, 2g + j, ...}`` at
    once; then pairs of groups merge, half of the groups against the other
    half, keeping the top ``k`` (the elementwise maximum of one sorted group
    and the other reversed holds the ``k`` largest of both, as a bitonic
    sequence, which a bitonic network sorts); the ``n - k g`` entries left
    over are inserted one by one. For ``k = 4`` of 17 bins: 63 ops (21 slices,
    25 MAXIMUM, 16 MINIMUM, one concatenation), whatever the number of rows.

    Args:
        values: ``[..., n]``, ``n`` static.
        k: ``1 <= k <= n``.
    Returns:
        ``[..., k]``.
    """
    n = values.shape[-1]
    groups = n // k
    columns = [values[..., i * groups : (i + 1) * groups] for i in range(k)]
    columns = _apply(columns, sorting_network(k))
    merge = bitonic_network(k) if k & (k - 1) == 0 else sorting_network(k)
    width = groups
    while width > 1:
        half = width // 2
        merged = [ops.maximum(columns[i][..., :half], columns[k - 1 - i][..., half : 2 * half]) for i in range(k)]
        merged = _apply(merged, merge)
        if width % 2:  # the odd group waits for the next round
            merged = [ops.concatenate([m, c[..., 2 * half :]], axis=-1) for m, c in zip(merged, columns)]
        columns, width = merged, half + width % 2
    for j in range(k * groups, n):  # insertion of the entries left over
        value = values[..., j : j + 1]
        for i in range(k):
            if i < k - 1:
                columns[i], value = ops.maximum(columns[i], value), ops.minimum(columns[i], value)
            else:
                columns[i] = ops.maximum(columns[i], value)
    return ops.concatenate(columns, axis=-1) if k > 1 else columns[0]


def top_k_probabilities(reg_logits, reg_max=16, k=4):
    """Each edge's ``k`` largest probabilities, largest first (by ``sorted_top_k``: no TOPK op).

    Args:
        reg_logits: ``[..., 4 * (reg_max + 1)]``, edge-major (l, t, r, b).
        reg_max: the largest bin ``n``.
        k: ``1 <= k <= reg_max + 1``.
    Returns:
        ``[..., 4, k]``.
    """
    return sorted_top_k(edge_probabilities(reg_logits, reg_max), k)


def distribution_statistics(reg_logits, reg_max=16, k=4, add_mean=True):
    """The DGQP's input features: per edge the top-``k`` probabilities (largest
    first) and, if ``add_mean``, their mean; edge-major (the reference's layout).

    Args:
        reg_logits: ``[..., 4 * (reg_max + 1)]``, edge-major (l, t, r, b).
        reg_max: the largest bin ``n``.
        k: ``1 <= k <= reg_max + 1``.
        add_mean: append the mean of the top-``k`` values.
    Returns:
        ``[..., 4 * (k + add_mean)]``: ``[l_top1 .. l_topk, l_mean, t_top1, ...]``.
    """
    reg_logits = ops.convert_to_tensor(reg_logits)
    top = top_k_probabilities(reg_logits, reg_max, k)
    if add_mean:
        top = ops.concatenate([top, ops.mean(top, axis=-1, keepdims=True)], axis=-1)
    shape = ops.shape(reg_logits)
    return ops.reshape(top, tuple(shape[:-1]) + (4 * (k + int(add_mean)),))


# --------------------------------------------------------------------- NumPy


def softmax_np(logits, axis=-1):
    """Softmax over ``axis`` (NumPy, float64), stable for large logits.

    Args:
        logits: array-like ``[...]``.
        axis: the axis to normalise.
    Returns:
        float64 array of ``logits``' shape.
    """
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def edge_probabilities_np(reg_logits, reg_max=16):
    """``edge_probabilities`` in NumPy: ``[..., 4 * (reg_max + 1)]`` -> float64 ``[..., 4, reg_max + 1]``."""
    reg_logits = np.asarray(reg_logits)
    return softmax_np(reg_logits.reshape(reg_logits.shape[:-1] + (4, reg_max + 1)), axis=-1)


def expectation_np(probs):
    """``expectation`` in NumPy: ``[..., n + 1]`` -> float64 ``[...]``, ``sum_i probs_i * i``."""
    probs = np.asarray(probs, np.float64)
    return probs @ np.arange(probs.shape[-1], dtype=np.float64)


def distribution_expectation_np(reg_logits, reg_max=16):
    """``distribution_expectation`` in NumPy: ``[..., 4 * (reg_max + 1)]`` -> float64 ``[..., 4]``."""
    return expectation_np(edge_probabilities_np(reg_logits, reg_max))


def edge_confidence_np(reg_logits, reg_max=16):
    """``edge_confidence`` in NumPy: ``[..., 4 * (reg_max + 1)]`` -> float64 ``[..., 4]``."""
    return edge_probabilities_np(reg_logits, reg_max).max(axis=-1)


def top_k_probabilities_np(reg_logits, reg_max=16, k=4):
    """``top_k_probabilities`` in NumPy: ``[..., 4 * (reg_max + 1)]`` -> float64 ``[..., 4, k]``, largest first."""
    return -np.sort(-edge_probabilities_np(reg_logits, reg_max), axis=-1)[..., :k]


def distribution_statistics_np(reg_logits, reg_max=16, k=4, add_mean=True):
    """``distribution_statistics`` in NumPy: ``[..., 4 * (reg_max + 1)]`` -> float64 ``[..., 4 * (k + add_mean)]``."""
    top = top_k_probabilities_np(reg_logits, reg_max, k)
    if add_mean:
        top = np.concatenate([top, top.mean(axis=-1, keepdims=True)], axis=-1)
    return top.reshape(top.shape[:-2] + (-1,))
