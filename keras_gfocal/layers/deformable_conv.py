"""Deformable convolution (v1, with the v2 modulation mask as an option)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_gfocal")
class DeformableConv2D(keras.layers.Layer):
    """A deformable 2D convolution that owns its offset conv, as mmcv's ``DeformConv2dPack``.

    A plain convolution reads each kernel tap at a fixed place of a regular
    grid; this one first predicts, per output pixel, tap and deform group, a
    fractional displacement ``(dy, dx)`` with its own convolution
    (``conv_offset``: same kernel size, stride, padding and dilation, with
    bias, zero-initialised, so a fresh layer is a plain convolution), reads
    the input there by bilinear interpolation and applies the kernel to what
    it read. Each of the four interpolation corners that falls outside the
    map counts as zero (the corner-by-corner rule of mmcv's and
    ``torchvision.ops.deform_conv2d``'s kernels, not a clamp to the border).
    With ``modulated=True`` (DCNv2, mmcv's ``ModulatedDeformConv2dPack``) the
    offset conv also predicts one mask logit per tap, and each sample is
    multiplied by its sigmoid.

    Offset layout (the last axis of ``conv_offset``'s output): for each deform
    group, for each kernel position ``i * kernel_size + j`` (row-major), ``dy``
    then ``dx``; for DCNv2 the ``deform_groups * kernel_size**2`` mask logits
    follow all the offsets, in (group, position) order. This is the channel
    order of mmcv's CPU kernel (``deformable_im2col_cpu_kernel`` reads
    ``offset_h`` at channel ``2 * (i * kernel_w + j)`` and ``offset_w`` one
    after, per group block) and of torchvision's, checked on a hand case in
    ``tests/fixtures/make_deform_conv_fixtures.py`` (a one-hot kernel with a
    ``+1`` on one channel moves the read by one row, not one column). Deform
    group ``g`` moves input channels ``g * C / deform_groups`` up to the next
    group's first.

    Sampling is gathers over the flattened ``[B * H * W * deform_groups,
    C / deform_groups]`` input, all output pixels, taps and the four corners
    at once; the kernel is then one matmul (a batched matmul per weight group
    when ``groups > 1``). It runs eagerly, in graph mode and under XLA, and
    converts to TFLite with built-in ops (GATHER, which the GPU delegate
    leaves to the CPU: see the README).

    Weights (a converter maps a PyTorch ``<prefix>`` as follows):
    ``conv_offset.kernel`` ``[k, k, C, n]`` = ``<prefix>.conv_offset.weight``
    transposed ``(2, 3, 1, 0)``; ``conv_offset.bias`` ``[n]`` =
    ``<prefix>.conv_offset.bias``; ``kernel`` ``[k, k, C / groups, filters]`` =
    ``<prefix>.weight`` transposed ``(2, 3, 1, 0)``; ``bias`` ``[filters]`` =
    ``<prefix>.bias`` (only with ``use_bias``). ``n`` is ``2 * deform_groups *
    k * k``, ``3 * deform_groups * k * k`` when modulated.

    Args:
        filters: output channels; a multiple of ``groups``.
        kernel_size: square kernel side (3 in the reference).
        strides: stride of both the offset conv and the deformable conv.
        padding: zeros added on every side, as PyTorch's integer ``padding``;
            ``None`` (default) for ``dilation * (kernel_size - 1) // 2``, which keeps
            the size at stride 1 (the ResNet bottleneck's ``padding=dilation``).
        dilation: spacing of the regular grid; ``strides`` and ``dilation``
            cannot both exceed 1 (TensorFlow's convolution refuses it).
        groups: weight groups, as ``nn.Conv2d``'s ``groups`` (32 in ResNeXt).
        deform_groups: channel groups that get their own offsets (1 in the
            reference).
        modulated: add the DCNv2 sigmoid mask.
        use_bias: add a learnt bias to the output (the bottleneck's conv has none).
        kernel_initializer, bias_initializer: of the deformable conv's weights.
    Input: ``[B, H, W, C]``, ``C`` known and a multiple of ``groups`` and of
    ``deform_groups``.
    Output: ``[B, H_out, W_out, filters]`` with ``H_out = (H + 2 * padding -
    dilation * (kernel_size - 1) - 1) // strides + 1`` (and the same for ``W``).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding=None,
        dilation=1,
        groups=1,
        deform_groups=1,
        modulated=False,
        use_bias=False,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("filters", filters),
            ("kernel_size", kernel_size),
            ("strides", strides),
            ("dilation", dilation),
            ("groups", groups),
            ("deform_groups", deform_groups),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DeformableConv2D: {name} must be a positive int, got {value!r}.")
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"DeformableConv2D: padding must be an int >= 0 or None, got {padding!r}.")
        if strides > 1 and dilation > 1:
            raise ValueError("DeformableConv2D: strides and dilation cannot both exceed 1.")
        if filters % groups:
            raise ValueError(f"DeformableConv2D: filters={filters} is not a multiple of groups={groups}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.deform_groups = deform_groups
        self.modulated = bool(modulated)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        taps = deform_groups * kernel_size * kernel_size
        self.conv_offset = keras.layers.Conv2D(
            (3 if self.modulated else 2) * taps,
            kernel_size,
            strides=strides,
            padding="valid",
            dilation_rate=dilation,
            use_bias=True,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv_offset",
        )

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"DeformableConv2D takes [B, H, W, C] with C known, got {tuple(input_shape)}.")
        channels = int(input_shape[-1])
        for name, value in (("groups", self.groups), ("deform_groups", self.deform_groups)):
            if channels % value:
                raise ValueError(f"DeformableConv2D: {channels} input channels are not a multiple of {name}={value}.")
        pad = 2 * self.padding
        b, h, w, _ = input_shape
        self.conv_offset.build((b, None if h is None else h + pad, None if w is None else w + pad, channels))
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, channels // self.groups, self.filters), initializer=self.kernel_initializer
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def call(self, inputs):
        p = self.padding
        offsets = self.conv_offset(ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]]))
        sampled = self._sample(inputs, offsets)
        outputs = self._convolve(sampled, ops.shape(offsets)[:3])
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return outputs

    def _sample(self, inputs, offsets):
        """Bilinear samples ``[B * H_out * W_out, k * k * C]``: one row per output pixel (row-major).

        ``inputs`` is ``[B, H, W, C]``; ``offsets`` the offset conv's ``[B, H_out,
        W_out, n]``. Each row holds the taps in row-major order, each tap the
        input channels, deform group by deform group.
        """
        batch, height, width, channels = (
            ops.shape(inputs)[0],
            ops.shape(inputs)[1],
            ops.shape(inputs)[2],
            inputs.shape[-1],
        )
        out_h, out_w = ops.shape(offsets)[1], ops.shape(offsets)[2]
        k, dg = self.kernel_size, self.deform_groups
        taps = k * k
        offsets = ops.cast(offsets, "float32")
        # [B, Ho, Wo, dg, k*k, (dy, dx)] -> taps before groups, the order the kernel reads them in.
        shift = ops.reshape(offsets[..., : 2 * dg * taps], (batch, out_h, out_w, dg, taps, 2))
        shift = ops.transpose(shift, (0, 1, 2, 4, 3, 5))
        tap = ops.arange(taps, dtype="int32")
        # Regular grid position of each (output pixel, tap): [1, Ho, 1, k*k, 1] and [1, 1, Wo, k*k, 1].
        grid_y = (
            ops.arange(out_h, dtype="int32")[:, None] * self.strides - self.padding + (tap // k)[None] * self.dilation
        )
        grid_x = (
            ops.arange(out_w, dtype="int32")[:, None] * self.strides - self.padding + (tap % k)[None] * self.dilation
        )
        y = ops.cast(grid_y, "float32")[None, :, None, :, None] + shift[..., 0]
        x = ops.cast(grid_x, "float32")[None, None, :, :, None] + shift[..., 1]
        y0, x0 = ops.floor(y), ops.floor(x)
        ly, lx = y - y0, x - x0
        y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
        # Each output row of the gather: (b, y, x, group) of the [B * H * W * dg, C / dg] input.
        row_base = ops.arange(batch, dtype="int32")[:, None, None, None, None] * height
        group = ops.arange(dg, dtype="int32")
        mask = None
        if self.modulated:
            logits = ops.reshape(offsets[..., 2 * dg * taps :], (batch, out_h, out_w, dg, taps))
            mask = ops.sigmoid(ops.transpose(logits, (0, 1, 2, 4, 3)))
        indices, weights = [], []
        for dy, wy in ((0, 1.0 - ly), (1, ly)):
            for dx, wx in ((0, 1.0 - lx), (1, lx)):
                cy, cx = y0 + dy, x0 + dx
                # A corner off the map reads zero: its weight goes to zero and its index anywhere valid.
                inside = (cy >= 0) & (cy < height) & (cx >= 0) & (cx < width)
                weight = ops.where(inside, wy * wx, 0.0)
                if mask is not None:
                    weight = weight * mask
                cy = ops.clip(cy, 0, height - 1)
                cx = ops.clip(cx, 0, width - 1)
                indices.append(((row_base + cy) * width + cx) * dg + group)
                weights.append(weight)
        # [B, Ho, Wo, k*k, dg, 4]
        indices = ops.stack(indices, axis=-1)
        weights = ops.stack(weights, axis=-1)
        table = ops.reshape(inputs, (-1, channels // dg))
        corners = ops.take(table, ops.reshape(indices, (-1,)), axis=0)
        corners = ops.reshape(corners, (-1, 4, channels // dg))
        weights = ops.cast(ops.reshape(weights, (-1, 4, 1)), corners.dtype)
        samples = ops.sum(corners * weights, axis=1)
        return ops.reshape(samples, (-1, taps * channels))

    def _convolve(self, samples, out_shape):
        """The kernel applied to ``[N, k * k * C]`` samples: ``[B, H_out, W_out, filters]``."""
        taps = self.kernel_size * self.kernel_size
        kernel = ops.cast(self.kernel, samples.dtype)
        per_group = kernel.shape[2]
        if self.groups == 1:
            outputs = ops.matmul(samples, ops.reshape(kernel, (taps * per_group, self.filters)))
        else:
            g, out_per_group = self.groups, self.filters // self.groups
            # [N, k*k, G, C/G] -> [G, N, k*k * C/G] against [G, k*k * C/G, F/G].
            samples = ops.transpose(ops.reshape(samples, (-1, taps, g, per_group)), (2, 0, 1, 3))
            samples = ops.reshape(samples, (g, -1, taps * per_group))
            kernel = ops.reshape(kernel, (taps, per_group, g, out_per_group))
            kernel = ops.reshape(ops.transpose(kernel, (2, 0, 1, 3)), (g, taps * per_group, out_per_group))
            outputs = ops.transpose(ops.matmul(samples, kernel), (1, 0, 2))
        return ops.reshape(outputs, (out_shape[0], out_shape[1], out_shape[2], self.filters))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = tuple(input_shape)
        span = self.dilation * (self.kernel_size - 1) + 1

        def out(size):
            return None if size is None else (size + 2 * self.padding - span) // self.strides + 1

        return (b, out(h), out(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "deform_groups": self.deform_groups,
            "modulated": self.modulated,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
