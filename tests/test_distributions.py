"""keras_gfocal.distributions: each NumPy twin equals its TF function, and both equal hand-computed values."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gfocal import distributions as D

RTOL = 1e-5
ATOL = 1e-6

#: The pairs (TF function, NumPy twin) that read regression logits, and their extra arguments.
PAIRS = {
    "edge_probabilities": (D.edge_probabilities, D.edge_probabilities_np),
    "distribution_expectation": (D.distribution_expectation, D.distribution_expectation_np),
    "edge_confidence": (D.edge_confidence, D.edge_confidence_np),
    "top_k_probabilities": (D.top_k_probabilities, D.top_k_probabilities_np),
    "distribution_statistics": (D.distribution_statistics, D.distribution_statistics_np),
}


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def random_logits(rng, batch_shape, reg_max, kind):
    """Float32 logits ``batch_shape + [4 (reg_max + 1)]``: normal, or extreme (entries of -50 / +50 / 0)."""
    shape = tuple(batch_shape) + (4 * (reg_max + 1),)
    if kind == "normal":
        return rng.normal(0.0, 3.0, size=shape).astype(np.float32)
    return rng.choice(np.array([-50.0, 0.0, 50.0], np.float32), size=shape)


def expected_shape(name, batch_shape, reg_max, k, add_mean):
    batch_shape = tuple(batch_shape)
    return {
        "edge_probabilities": batch_shape + (4, reg_max + 1),
        "distribution_expectation": batch_shape + (4,),
        "edge_confidence": batch_shape + (4,),
        "top_k_probabilities": batch_shape + (4, k),
        "distribution_statistics": batch_shape + (4 * (k + int(add_mean)),),
    }[name]


def call(name, fn, logits, reg_max, k, add_mean):
    if name == "top_k_probabilities":
        return fn(logits, reg_max, k)
    if name == "distribution_statistics":
        return fn(logits, reg_max, k, add_mean)
    return fn(logits, reg_max)


# --------------------------------------------------------------- twins agree


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("reg_max", [16, 7, 3, 1])
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
@pytest.mark.parametrize("kind", ["normal", "extreme"])
def test_numpy_twin_equals_tf_function(name, reg_max, batch_shape, kind):
    rng = np.random.default_rng(1000 * reg_max + 10 * len(batch_shape) + (kind == "extreme"))
    logits = random_logits(rng, batch_shape, reg_max, kind)
    tf_fn, np_fn = PAIRS[name]
    for k, add_mean in sorted({(1, False), (min(4, reg_max + 1), True), (reg_max + 1, True)}):
        got_np = call(name, np_fn, logits, reg_max, k, add_mean)
        got_tf = to_np(call(name, tf_fn, logits, reg_max, k, add_mean))
        shape = expected_shape(name, batch_shape, reg_max, k, add_mean)
        assert got_np.shape == shape and got_tf.shape == shape
        assert got_np.dtype == np.float64
        assert np.all(np.isfinite(got_np)) and np.all(np.isfinite(got_tf))
        np.testing.assert_allclose(got_tf, got_np, rtol=RTOL, atol=ATOL, err_msg=f"{name} k={k} mean={add_mean}")


@pytest.mark.parametrize("reg_max", [16, 4])
def test_expectation_twins_agree_on_probabilities(reg_max):
    rng = np.random.default_rng(reg_max)
    probs = rng.dirichlet(np.ones(reg_max + 1), size=(3, 4)).astype(np.float32)
    got_np = D.expectation_np(probs)
    assert got_np.shape == (3, 4)
    np.testing.assert_allclose(to_np(D.expectation(probs)), got_np, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_np, np.sum(probs * np.arange(reg_max + 1), axis=-1), rtol=1e-6)


def test_large_logits_are_stable():
    # Logits of 1000 overflow exp() unless the maximum is subtracted first.
    rng = np.random.default_rng(7)
    logits = (1000.0 + rng.normal(0.0, 3.0, size=(6, 4 * 17))).astype(np.float32)
    for name, (tf_fn, np_fn) in PAIRS.items():
        got_np = call(name, np_fn, logits, 16, 4, True)
        got_tf = to_np(call(name, tf_fn, logits, 16, 4, True))
        assert np.all(np.isfinite(got_np)) and np.all(np.isfinite(got_tf)), name
        np.testing.assert_allclose(got_tf, got_np, rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(D.edge_probabilities_np(logits).sum(-1), 1.0, rtol=1e-12)


def test_default_arguments_are_the_reference_heads():
    # reg_max 16, k 4 and the mean (REFERENCE.md's DGQP): the defaults equal those arguments given.
    logits = random_logits(np.random.default_rng(8), (2,), 16, "normal")
    for name, fns in PAIRS.items():
        for fn in fns:
            got = to_np(fn(logits))
            assert got.shape == expected_shape(name, (2,), 16, 4, True), name
            np.testing.assert_array_equal(got, to_np(call(name, fn, logits, 16, 4, True)), err_msg=name)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_expectation_keeps_the_probabilities_dtype(dtype):
    probs = np.array([[0.25, 0.5, 0.25], [0.0, 0.0, 1.0]], dtype)
    got = D.expectation(probs)
    assert got.dtype == dtype
    np.testing.assert_array_equal(to_np(got), np.array([1.0, 2.0], dtype))


# ------------------------------------------------------------ hand-computed


@pytest.mark.parametrize("reg_max", [16, 7])
def test_uniform_logits(reg_max):
    # Every bin equally likely: expectation reg_max / 2, every probability 1 / (reg_max + 1).
    n1 = reg_max + 1
    logits = np.full((2, 4 * n1), 3.0, np.float32)
    for probs in (D.edge_probabilities_np(logits, reg_max), to_np(D.edge_probabilities(logits, reg_max))):
        np.testing.assert_allclose(probs, np.full((2, 4, n1), 1 / n1), rtol=RTOL)
    for fn in (D.distribution_expectation_np, D.distribution_expectation):
        np.testing.assert_allclose(to_np(fn(logits, reg_max)), np.full((2, 4), reg_max / 2), rtol=RTOL)
    for fn in (D.edge_confidence_np, D.edge_confidence):
        np.testing.assert_allclose(to_np(fn(logits, reg_max)), np.full((2, 4), 1 / n1), rtol=RTOL)
    for fn in (D.distribution_statistics_np, D.distribution_statistics):
        np.testing.assert_allclose(to_np(fn(logits, reg_max, 3, True)), np.full((2, 16), 1 / n1), rtol=RTOL)


def _peaked_logits():
    """One row: edge l a dominant bin 3; t bins 2 and 5 with probabilities 3/4 and 1/4; r a dominant
    bin 16; b bins 0 and 16 with probabilities 1 / (1 + e) and e / (1 + e) (the rest below 1e-17)."""
    n1 = 17
    logits = np.full(4 * n1, -50.0, np.float32)
    logits[0 * n1 + 3] = 50.0
    logits[1 * n1 + 2] = math.log(3.0)
    logits[1 * n1 + 5] = 0.0
    logits[2 * n1 + 16] = 50.0
    logits[3 * n1 + 0] = 40.0
    logits[3 * n1 + 16] = 41.0
    return logits[None]


E = math.e


def test_peaked_logits_expectation():
    expected = [[3.0, 0.75 * 2 + 0.25 * 5, 16.0, 16.0 * E / (1 + E)]]
    for fn in (D.distribution_expectation_np, D.distribution_expectation):
        np.testing.assert_allclose(to_np(fn(_peaked_logits())), expected, rtol=RTOL, atol=1e-5)


def test_peaked_logits_probabilities_confidence_and_top_k():
    top3 = [[1.0, 0.0, 0.0], [0.75, 0.25, 0.0], [1.0, 0.0, 0.0], [E / (1 + E), 1 / (1 + E), 0.0]]
    for fn in (D.top_k_probabilities_np, D.top_k_probabilities):
        np.testing.assert_allclose(to_np(fn(_peaked_logits(), 16, 3)), [top3], rtol=RTOL, atol=ATOL)
    for fn in (D.edge_confidence_np, D.edge_confidence):
        np.testing.assert_allclose(to_np(fn(_peaked_logits())), [[1.0, 0.75, 1.0, E / (1 + E)]], rtol=RTOL)
    for fn in (D.edge_probabilities_np, D.edge_probabilities):
        probs = to_np(fn(_peaked_logits()))
        np.testing.assert_allclose(probs[0, 1, [2, 5]], [0.75, 0.25], rtol=RTOL)
        np.testing.assert_allclose(probs[0, 3, [0, 16]], [1 / (1 + E), E / (1 + E)], rtol=RTOL)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=RTOL)


def test_statistics_layout_is_edge_major_top_k_then_mean():
    # [l_top1, l_top2, l_mean, t_top1, t_top2, t_mean, ...]
    expected = [[1.0, 0.0, 0.5, 0.75, 0.25, 0.5, 1.0, 0.0, 0.5, E / (1 + E), 1 / (1 + E), 0.5]]
    for fn in (D.distribution_statistics_np, D.distribution_statistics):
        np.testing.assert_allclose(to_np(fn(_peaked_logits(), 16, 2, True)), expected, rtol=RTOL, atol=ATOL)
        no_mean = to_np(fn(_peaked_logits(), 16, 2, False))
        np.testing.assert_allclose(no_mean, np.delete(expected, [2, 5, 8, 11], axis=1), rtol=RTOL, atol=ATOL)


def test_softmax_np_hand_values_and_axis():
    np.testing.assert_allclose(D.softmax_np([0.0, math.log(3.0)]), [0.25, 0.75], rtol=1e-12)
    np.testing.assert_allclose(D.softmax_np([[1000.0], [1000.0 + math.log(3.0)]], axis=0), [[0.25], [0.75]])
    np.testing.assert_allclose(D.softmax_np([[0.0, math.log(3.0)]] * 2, axis=-1), [[0.25, 0.75]] * 2)
    # Rows of very different size: each row's own maximum is subtracted (a global one underflows row 0).
    np.testing.assert_allclose(
        D.softmax_np([[0.0, math.log(3.0)], [1000.0, 1000.0 + math.log(3.0)]]), [[0.25, 0.75]] * 2
    )


def test_sorted_top_k_is_exact_with_ties():
    values = np.array([[0.1, 0.3, 0.3, 0.2, 0.3, 0.0, 0.1]], np.float32)
    for k in range(1, 8):
        np.testing.assert_array_equal(to_np(D.sorted_top_k(values, k)), -np.sort(-values, axis=-1)[:, :k])


@pytest.mark.parametrize("n, k", [(17, 4), (17, 1), (17, 3), (17, 17), (17, 8), (8, 4), (33, 4), (5, 2), (1, 1)])
def test_sorted_top_k_equals_ops_top_k_exactly(n, k):
    rng = np.random.default_rng(60 + n + k)
    for values in (
        rng.random((3, 7, 4, n)).astype(np.float32),  # distinct
        rng.integers(0, 3, size=(3, 7, 4, n)).astype(np.float32),
    ):  # ties
        expected, _ = keras.ops.top_k(values, k=k, sorted=True)
        got = to_np(D.sorted_top_k(values, k))
        assert got.shape == values.shape[:-1] + (k,)
        np.testing.assert_array_equal(got, to_np(expected))


def _every_zero_one_input(n):
    """All ``2 ** n`` rows of ``n`` bits, ``[2 ** n, n]`` int8 (row ``r`` holds the bits of ``r``)."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int8)


def _compare_exchange(rows, comparators):
    """Applies comparators ``(i, j)`` to every row of ``[rows, n]`` at once: the larger value to column ``i``."""
    rows = rows.copy()
    for i, j in comparators:
        rows[:, i], rows[:, j] = np.maximum(rows[:, i], rows[:, j]), np.minimum(rows[:, i], rows[:, j])
    return rows


def test_sorting_networks_sort_every_zero_one_input():
    # The 0-1 principle: a comparator network that sorts every 0/1 input sorts every input.
    for n in range(1, 13):
        bits = _every_zero_one_input(n)
        np.testing.assert_array_equal(_compare_exchange(bits, D.sorting_network(n)), -np.sort(-bits), err_msg=n)
    assert D.sorting_network(4) == [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)]  # optimal: 5 comparators


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_bitonic_network_sorts_every_zero_one_bitonic_input(n):
    # The 0/1 bitonic sequences of n wires are the rotations of m ones followed by n - m zeros
    # (1..1 0..0 1..1 and 0..0 1..1 0..0 included); a bitonic sorter must put them in descending order.
    rows = np.array([np.roll(np.arange(n) < m, shift) for m in range(n + 1) for shift in range(n)], np.int8)
    got = _compare_exchange(rows, D.bitonic_network(n))
    np.testing.assert_array_equal(got, -np.sort(-rows))
    assert len(D.bitonic_network(n)) == n // 2 * int(math.log2(n))  # log2(n) stages of n / 2 comparators


@pytest.mark.parametrize("k", [4, 8, 3])
def test_sorted_top_k_of_17_on_every_zero_one_input(k):
    # By the 0-1 principle the whole top-k network (column sorts, bitonic merges, insertions) is
    # exact on every input if it is on every 0/1 input: the top k of a 0/1 row are min(ones, k) ones.
    bits = _every_zero_one_input(17).astype(np.float32)
    expected = (np.arange(k)[None] < bits.sum(axis=1, keepdims=True)).astype(np.float32)
    np.testing.assert_array_equal(to_np(D.sorted_top_k(bits, k)), expected)


def test_sorted_top_k_of_4_of_17_takes_63_ops():
    # The count the docstring gives, by hand: the 4 columns of 4 (4 slices) sorted by 5 comparators
    # (5 MAXIMUM, 5 MINIMUM); two merge rounds of 8 slices, 4 MAXIMUM and the 4 comparators of the
    # bitonic network (4 + 4); the 17th entry inserted (1 slice, 4 MAXIMUM, 3 MINIMUM); 1 concatenation.
    fn = tf.function(lambda values: D.sorted_top_k(values, 4), autograph=False)
    graph = fn.get_concrete_function(tf.TensorSpec([None, 4, 17], tf.float32)).graph
    kinds = [op.type for op in graph.get_operations()]
    counts = {kind: kinds.count(kind) for kind in ("StridedSlice", "Maximum", "Minimum", "ConcatV2")}
    assert counts == {"StridedSlice": 4 + 8 + 8 + 1, "Maximum": 5 + 8 + 8 + 4, "Minimum": 5 + 4 + 4 + 3, "ConcatV2": 1}
