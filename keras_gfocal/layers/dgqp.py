"""The Distribution-Guided Quality Predictor (DGQP) of GFocalV2."""

import keras
from keras import ops

STATISTICS_SCOPE = "distribution_statistics"


def normal_init():
    """A new N(0, 0.01) initializer: the reference's head init.

    One per layer: in Keras 3 an unseeded initializer instance draws the same
    values on every call, so a shared one would start every layer of a shape
    with the same kernel.
    """
    return keras.initializers.RandomNormal(stddev=0.01)


def sorting_network(n):
    """Comparators ``(i, j)``, ``i < j``, that sort ``n`` wires when each puts the larger value on ``i``.

    Batcher's odd-even merge sort on the next power of two, without the
    comparators that touch the missing wires (they would hold -inf and never
    move). For 4 wires: the optimal 5 comparators.
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
    """Comparators that sort a bitonic sequence of ``n`` (a power of two) wires, larger first."""
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
        values: ``[..., n]``.
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


@keras.saving.register_keras_serializable(package="keras_gfocal")
class DGQP(keras.layers.Layer):
    """Predicts localisation quality from the shape of the edge distributions.

    For each of the four edges the softmax over its ``reg_max + 1`` bins is
    taken; its ``topk`` largest probabilities (descending) and, if
    ``add_mean``, their mean form ``topk + 1`` statistics. The ``4 * (topk + 1)``
    statistics (edge-major) go through ``Dense(hidden_units) -> ReLU ->
    Dense(1) -> sigmoid`` (the reference's two 1x1 convs).

    Built for the TFLite GPU delegate: the top-k is a compare-exchange network
    of MAXIMUM/MINIMUM ops (``sorted_top_k``), exact, instead of TOPK_V2; the
    mean, linear in the top-k values, is folded into the hidden layer's
    weights (its kernel row for the mean, divided by ``topk``, added to the
    rows of the values it averages) instead of a MEAN over channels; the two
    layers run as 1x1 convolutions. The weights keep the reference layout
    (``hidden`` ``[4 (topk + 1), hidden_units]``, ``out`` ``[hidden_units, 1]``),
    and the outputs equal the unfolded formula to float rounding; training
    gradients are the same.

    Args:
        reg_max: largest bin index ``n``; inputs have ``4 * (n + 1)`` channels.
        topk: number of top probabilities per edge (paper: 4).
        add_mean: append the mean of the top-k values (paper: True).
        hidden_units: width of the hidden layer (paper: 64).
    Input: ``[..., 4 * (reg_max + 1)]`` regression logits.
    Output: ``[..., 1]`` float32 quality in ``(0, 1)``.
    """

    def __init__(self, reg_max=16, topk=4, add_mean=True, hidden_units=64, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= topk <= reg_max + 1:
            raise ValueError(f"DGQP topk must be in [1, reg_max + 1 = {reg_max + 1}], got {topk}.")
        self.reg_max = reg_max
        self.topk = topk
        self.add_mean = add_mean
        self.hidden_units = hidden_units
        self.hidden = keras.layers.Dense(
            hidden_units, activation="relu", kernel_initializer=normal_init(), dtype="float32", name="hidden"
        )
        self.out = keras.layers.Dense(1, kernel_initializer=normal_init(), dtype="float32", name="out")

    @property
    def num_features(self):
        return 4 * (self.topk + int(self.add_mean))

    def build(self, input_shape):
        self.hidden.build((None, self.num_features))
        self.out.build((None, self.hidden_units))

    def _top_k(self, reg_logits):
        """``[..., 4, topk]``: each edge's top-k probabilities, largest first."""
        # Full-int8 TFLite keeps the ops named STATISTICS_SCOPE in float (`export.tflite`).
        with keras.name_scope(STATISTICS_SCOPE):
            reg_logits = ops.cast(reg_logits, "float32")
            shape = ops.shape(reg_logits)
            probs = ops.softmax(ops.reshape(reg_logits, tuple(shape[:-1]) + (4, self.reg_max + 1)), axis=-1)
            return sorted_top_k(probs, self.topk)

    def statistics(self, reg_logits):
        """The ``[..., 4 * (topk + add_mean)]`` features the MLP reads (the reference's layout)."""
        top = self._top_k(reg_logits)
        if self.add_mean:
            top = ops.concatenate([top, ops.mean(top, axis=-1, keepdims=True)], axis=-1)
        shape = ops.shape(reg_logits)
        return ops.reshape(top, tuple(shape[:-1]) + (self.num_features,))

    def _hidden_kernel(self):
        """The hidden kernel over the top-k values alone, the mean's rows folded in."""
        kernel = ops.cast(self.hidden.kernel, "float32")
        if not self.add_mean:
            return kernel
        per_edge = ops.reshape(kernel, (4, self.topk + 1, self.hidden_units))
        folded = per_edge[:, : self.topk] + per_edge[:, self.topk :] / self.topk
        return ops.reshape(folded, (4 * self.topk, self.hidden_units))

    def call(self, reg_logits):
        top = self._top_k(reg_logits)
        shape = ops.shape(reg_logits)
        # The MLP as 1x1 convolutions of a [1, N, 1, 4 topk] map: in TFLite
        # files CONV_2D, which the GPU delegate takes in every format
        # (dynamic-range files mark every FULLY_CONNECTED with a version it
        # refuses).
        features = ops.reshape(top, (1, -1, 1, 4 * self.topk))
        kernel = ops.reshape(self._hidden_kernel(), (1, 1, 4 * self.topk, self.hidden_units))
        hidden = ops.relu(ops.conv(features, kernel) + ops.cast(self.hidden.bias, "float32"))
        kernel = ops.reshape(ops.cast(self.out.kernel, "float32"), (1, 1, self.hidden_units, 1))
        quality = ops.sigmoid(ops.conv(hidden, kernel) + ops.cast(self.out.bias, "float32"))
        return ops.reshape(quality, tuple(shape[:-1]) + (1,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        return {
            **super().get_config(),
            "reg_max": self.reg_max,
            "topk": self.topk,
            "add_mean": self.add_mean,
            "hidden_units": self.hidden_units,
        }
