"""Res2Net v1d (deep stem, average-pool shortcuts) as MMDetection 3.3 builds it: the backbone of
GFocalV2's best model (Res2Net-101 v1d 26w x 4s)."""

import math

import keras

from keras_gfocal.layers.chain import build_chain
from keras_gfocal.layers.deformable_conv import DeformableConv2D
from keras_gfocal.layers.resnet import StemAndStages, _bn, _build_norm, _conv, _conv_norm, checked_dcn_stages

# Bottle2neck blocks per stage (layer1..layer4).
RES2NET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_STAGE_PLANES = (64, 128, 256, 512)
_EXPANSION = 4


def split_width(planes, base_width):
    """Channels of one of a block's ``scales`` splits: ``floor(planes * base_width / 64)``
    (26, 52, 104, 208 for the four stages of a 26w model)."""
    return int(math.floor(planes * (base_width / 64)))


@keras.saving.register_keras_serializable(package="keras_gfocal")
class Res2NetBackbone(StemAndStages):
    """Res2Net v1d returning C3, C4, C5, as MMDetection 3.3's ``Res2Net`` in ``pytorch`` style.

    The deep stem has three 3x3 convs (32, 32, 64 channels, the first with stride 2), each
    followed by BatchNorm and ReLU, then a 3x3 stride-2 max-pool. Each stage is a chain of
    ``Bottle2neck`` blocks; its first block carries the stride and a shortcut of average-pool,
    1x1 conv and BatchNorm. MMDetection's ``Res2Net`` builds the deep stem and these shortcuts
    whatever its ``deep_stem`` and ``avg_down`` arguments say, so they are not options here.
    Convs have no bias; BatchNorm (epsilon 1e-5) always runs in inference mode with its
    statistics frozen (the reference's ``norm_eval``).

    With ``dcn_stages`` (the reference's ``stage_with_dcn``), the split 3x3 convs (``convs``) of
    every block of a listed stage are ``DeformableConv2D`` layers of the same stride and padding
    (MMDetection's ``dcn=dict(type='DCN')``, or ``'DCNv2'`` with ``dcn_modulated``); their offset
    convs start at zero, so a fresh stage computes what the plain one does.

    Layer names are MMDetection's state-dict keys with ``_`` for ``.`` (``layer2_0_convs_1`` is
    ``layer2.0.convs.1``); its ImageNet weights load through
    ``keras_gfocal.pretrained.load_backbone_weights``.

    Args:
        depth: 50, 101 or 152.
        scales: splits of each block's 3x3 stage, at least 2.
        base_width: split width of the first stage; stage ``i`` has ``2**i`` times as many.
        frozen_stages: as MMDetection counts: -1 freezes nothing, 0 the stem, ``n`` the stem and
            ``layer1`` .. ``layer{n}`` (conv and BatchNorm weights), up to 4.
        dcn_stages: stage numbers (1 for ``layer1`` .. 4 for ``layer4``) whose blocks deform
            their split 3x3 convs, as ``ResNetBackbone``'s; default none (``(3, 4)`` in
            GFocalV2's R2-101-DCN model).
        dcn_modulated: DCNv2 (offsets and a sigmoid mask) instead of DCNv1.
        fold_batch_norm: the inference form, as ``ResNetBackbone``'s: convs with biases, no
            BatchNorm.
    Input: ``[B, H, W, 3]`` images normalised with the reference RGB mean/std, H and W
        multiples of 32 (other sizes give what MMDetection gives).
    Output: ``[C3, C4, C5]``: ``[B, H/8, W/8, 512]``, ``[B, H/16, W/16, 1024]``,
        ``[B, H/32, W/32, 2048]``.
    """

    def __init__(
        self,
        depth=101,
        scales=4,
        base_width=26,
        frozen_stages=1,
        dcn_stages=(),
        dcn_modulated=False,
        fold_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if depth not in RES2NET_BLOCKS:
            raise ValueError(f"Res2NetBackbone depth must be one of {sorted(RES2NET_BLOCKS)}, got {depth!r}.")
        if scales < 2:
            raise ValueError(f"scales must be at least 2 (1 is a ResNet), got {scales!r}.")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in [-1, 4], got {frozen_stages!r}.")
        dcn_stages = checked_dcn_stages(dcn_stages)
        self.depth = depth
        self.scales = scales
        self.base_width = base_width
        self.frozen_stages = frozen_stages
        self.dcn_stages = dcn_stages
        self.dcn_modulated = bool(dcn_modulated)
        self.fold_batch_norm = folded = bool(fold_batch_norm)
        self.stem = []
        for index, (filters, strides) in zip((0, 3, 6), ((32, 2), (32, 1), (64, 1))):
            self.stem += _conv(filters, 3, strides, f"stem_{index}", use_bias=folded)
            self.stem += [] if folded else [_bn(f"stem_{index + 1}")]
            self.stem += [keras.layers.ReLU(name=f"stem_{index + 2}")]
        self.stem += [
            keras.layers.ZeroPadding2D(1, name="maxpool_pad"),  # inputs are >= 0 after ReLU
            keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool"),
        ]
        self.stages = []
        for stage, (blocks, planes) in enumerate(zip(RES2NET_BLOCKS[depth], _STAGE_PLANES), start=1):
            self.stages.append(
                [
                    Bottle2neck(
                        split_width(planes, base_width),
                        planes * _EXPANSION,
                        scales=scales,
                        strides=2 if stage > 1 and block == 0 else 1,
                        first_in_stage=block == 0,
                        deformable=stage in dcn_stages,
                        modulated=self.dcn_modulated,
                        fold_batch_norm=folded,
                        name=f"layer{stage}_{block}",
                    )
                    for block in range(blocks)
                ]
            )
        self.output_channels = tuple(p * _EXPANSION for p in _STAGE_PLANES[1:])
        if frozen_stages >= 0:
            for layer in self.stem:
                layer.trainable = False
        for stage in self.stages[: max(frozen_stages, 0)]:
            for block in stage:
                block.trainable = False

    def get_config(self):
        return {
            **super().get_config(),
            "depth": self.depth,
            "scales": self.scales,
            "base_width": self.base_width,
            "frozen_stages": self.frozen_stages,
            "dcn_stages": list(self.dcn_stages),
            "dcn_modulated": self.dcn_modulated,
            "fold_batch_norm": self.fold_batch_norm,
        }


@keras.saving.register_keras_serializable(package="keras_gfocal")
class Bottle2neck(keras.layers.Layer):
    """Res2Net's bottleneck: 1x1 conv to ``scales`` splits of ``width`` channels, a 3x3 conv on
    each split but the last, hierarchically, then a 1x1 conv to ``filters``; BatchNorm in
    inference mode throughout.

    In a normal block, split ``i > 0`` is added to the output of split ``i - 1``'s conv before
    its own conv; the last split passes through unchanged. In the first block of a stage
    (``first_in_stage``) the splits do not add, each 3x3 conv carries the stride, and the last
    split takes a 3x3 average pool with the same stride (zero padding counted in the mean, as
    ``nn.AvgPool2d(3, stride, padding=1)``) instead. That block's shortcut is an average pool
    (``strides`` x ``strides``, a partial window at an odd edge averaging only what it covers),
    a 1x1 conv and BatchNorm. With ``deformable`` the split 3x3 convs are ``DeformableConv2D``
    layers (DCNv2 when ``modulated``) of the same stride and padding. With ``fold_batch_norm``
    (the inference form) every conv has a bias and no BatchNorm follows it.

    Input ``[B, H, W, C]``; output ``[B, ceil(H / strides), ceil(W / strides), filters]``.
    """

    def __init__(
        self,
        width,
        filters,
        scales=4,
        strides=1,
        first_in_stage=False,
        deformable=False,
        modulated=False,
        fold_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.width = width
        self.filters = filters
        self.scales = scales
        self.strides = strides
        self.first_in_stage = first_in_stage
        self.deformable = bool(deformable)
        self.modulated = bool(modulated)
        self.fold_batch_norm = folded = bool(fold_batch_norm)
        self.conv1 = keras.layers.Conv2D(width * scales, 1, use_bias=folded, name="conv1")
        self.bn1 = _bn("bn1", folded)
        if self.deformable:
            # A deformable conv pads by itself (PyTorch's padding=1): no padding layer before it.
            self.pads = [None] * (scales - 1)
            self.convs = [
                DeformableConv2D(
                    width, 3, strides=strides, padding=1, modulated=modulated, use_bias=folded, name=f"convs_{i}"
                )
                for i in range(scales - 1)
            ]
        else:
            pads_and_convs = [_conv(width, 3, strides, f"convs_{i}", use_bias=folded) for i in range(scales - 1)]
            self.pads = [pad for pad, _ in pads_and_convs]
            self.convs = [conv for _, conv in pads_and_convs]
        self.bns = [_bn(f"bns_{i}", folded) for i in range(scales - 1)]
        self.pool = None
        if first_in_stage and strides != 1:
            self.pool = [
                keras.layers.ZeroPadding2D(1, name="pool_pad"),
                keras.layers.AveragePooling2D(3, strides=strides, padding="valid", name="pool"),
            ]
        self.conv3 = keras.layers.Conv2D(filters, 1, use_bias=folded, name="conv3")
        self.bn3 = _bn("bn3", folded)
        self.downsample_pool = None
        if first_in_stage and strides != 1:  # layer1's 1x1 pool (downsample.0) is the identity
            # TF's "same" average pool leaves its padding out of the mean, as
            # nn.AvgPool2d(ceil_mode=True, count_include_pad=False) does.
            self.downsample_pool = keras.layers.AveragePooling2D(
                strides, strides=strides, padding="same", name="downsample_0"
            )
        if first_in_stage:
            self.downsample_conv = keras.layers.Conv2D(filters, 1, use_bias=folded, name="downsample_1")
            self.downsample_bn = _bn("downsample_2", folded)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv1.build(shape)
        _build_norm(self.bn1, shape[:-1] + (self.width * self.scales,))
        split = shape[:-1] + (self.width,)
        for pad, conv, bn in zip(self.pads, self.convs, self.bns):
            _build_norm(bn, build_chain([layer for layer in (pad, conv) if layer is not None], split))
        out = self.compute_output_shape(shape)
        if self.pool:
            build_chain(self.pool, split)
        self.conv3.build(out[:-1] + (self.width * self.scales,))
        _build_norm(self.bn3, out)
        if self.first_in_stage:
            self.downsample_conv.build(shape)
            _build_norm(self.downsample_bn, out)

    def conv_batch_norm_pairs(self):
        """``(conv, BatchNormalization or None)`` for conv1, the split convs, conv3 and the shortcut's conv."""
        pairs = [(self.conv1, self.bn1), *zip(self.convs, self.bns), (self.conv3, self.bn3)]
        return pairs + ([(self.downsample_conv, self.downsample_bn)] if self.first_in_stage else [])

    def call(self, x):
        y = keras.ops.relu(_conv_norm(self.conv1, self.bn1, x))
        splits = keras.ops.split(y, self.scales, axis=-1)
        outputs = []
        for i, (pad, conv, bn) in enumerate(zip(self.pads, self.convs, self.bns)):
            inner = splits[i] if i == 0 or self.first_in_stage else outputs[-1] + splits[i]
            inner = inner if pad is None else pad(inner)
            outputs.append(keras.ops.relu(_conv_norm(conv, bn, inner)))
        last = splits[-1]
        if self.pool:
            last = self.pool[1](self.pool[0](last))
        y = _conv_norm(self.conv3, self.bn3, keras.ops.concatenate(outputs + [last], axis=-1))
        shortcut = x
        if self.first_in_stage:
            pooled = x if self.downsample_pool is None else self.downsample_pool(x)
            shortcut = _conv_norm(self.downsample_conv, self.downsample_bn, pooled)
        return keras.ops.relu(y + shortcut)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = tuple(input_shape)
        s = self.strides
        return (b, None if h is None else -(-h // s), None if w is None else -(-w // s), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "filters": self.filters,
            "scales": self.scales,
            "strides": self.strides,
            "first_in_stage": self.first_in_stage,
            "deformable": self.deformable,
            "modulated": self.modulated,
            "fold_batch_norm": self.fold_batch_norm,
        }
