"""ResNet-50/101 in torchvision ("pytorch") style, the reference's backbone."""

import keras

from keras_gfocal.layers.backbone import Backbone
from keras_gfocal.layers.batch_norm_folding import frozen_batch_norm_affine
from keras_gfocal.layers.chain import build_chain
from keras_gfocal.layers.deformable_conv import DeformableConv2D
from keras_gfocal.layers.grouped_conv import GroupedConv2D

# Bottleneck blocks per stage (layer1..layer4).
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_STAGE_WIDTHS = (64, 128, 256, 512)
_EXPANSION = 4
_BN_EPSILON = 1e-5


def _conv(filters, kernel_size, strides, name, groups=1, use_bias=False):
    """A conv (bias-free unless ``use_bias``) that pads as PyTorch does: ``k // 2`` on every side.

    Keras ``padding="same"`` pads 0 before and 1 after a stride-2 conv on an
    even size, which shifts every output cell by one input pixel against the
    reference; explicit symmetric padding + ``"valid"`` matches it exactly.
    """
    layers = []
    if kernel_size > 1:
        layers.append(keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad"))
    layers.append(
        # Keras' own grouped Conv2D runs through XLA on TensorFlow, which ONNX cannot take.
        (GroupedConv2D if groups > 1 else keras.layers.Conv2D)(
            filters, kernel_size, strides=strides, padding="valid", groups=groups, use_bias=use_bias, name=name
        )
    )
    return layers


def _bn(name, fold_batch_norm=False):
    """The BatchNormalization after a conv, or None in the folded (inference) form."""
    return None if fold_batch_norm else keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=name)


def _normalize(bn, x):
    """``bn`` in inference mode (the reference's norm_eval), or ``x`` itself where it was folded."""
    return x if bn is None else bn(x, training=False)


def _conv_norm(conv, bn, x):
    """``bn(conv(x))``, the BatchNorm in inference mode, computed as one convolution when it can be.

    With frozen statistics the BatchNorm is ``y * s + t`` per channel (``s = gamma /
    sqrt(moving_variance + epsilon)``, ``t = beta - moving_mean * s``), so convolving with the
    kernel times ``s`` and adding ``t`` gives the same values (sums in another order) and the
    same gradients for the kernel, ``gamma`` and ``beta``, while TensorFlow skips the
    BatchNorm's passes over the map, forward and backward. It runs the two layers as they are
    for a deformable or biased conv, the folded form (``bn`` None) and mixed precision (where
    ``s`` and ``t`` would be read in the low precision).
    """
    if (
        bn is None
        or not isinstance(conv, keras.layers.Conv2D)
        or conv.use_bias
        or conv.compute_dtype != "float32"
        or keras.backend.standardize_dtype(x.dtype) != "float32"
        or not (bn.scale and bn.center)
    ):
        return _normalize(bn, conv(x))
    scale, shift = frozen_batch_norm_affine(bn)
    return conv.convolution_op(x, conv.kernel * scale) + shift


def _build_norm(bn, shape):
    if bn is not None:
        bn.build(shape)


def checked_dcn_stages(dcn_stages):
    """``dcn_stages`` as a tuple of distinct stage numbers in 1..4 (1 for ``layer1``); ValueError otherwise."""
    dcn_stages = tuple(dcn_stages)
    if len(set(dcn_stages)) != len(dcn_stages) or not all(
        isinstance(stage, int) and not isinstance(stage, bool) and 1 <= stage <= 4 for stage in dcn_stages
    ):
        raise ValueError(f"dcn_stages must be distinct stage numbers in 1..4, got {dcn_stages!r}.")
    return dcn_stages


class StemAndStages(Backbone):
    """A backbone of the ResNet family: a ``stem`` (a list of layers) and four ``stages`` (lists
    of blocks), set by the subclass; ``[C3, C4, C5]`` are the outputs of stages 2, 3 and 4.
    BatchNorm layers of the stem run in inference mode (the blocks run theirs so themselves).

    Every BatchNorm follows a conv, so the whole backbone has a folded form
    (``fold_batch_norm=True``) with the same convs, each with a bias, and no BatchNorm:
    ``keras_gfocal.inference_form`` builds it from a trained one through
    ``conv_batch_norm_pairs``.
    """

    fold_batch_norm = False

    def conv_batch_norm_pairs(self):
        """``(conv, BatchNormalization)`` for every conv, in a fixed order; the norm is None
        for a conv without one and everywhere in the folded form."""
        pairs = []
        for index, layer in enumerate(self.stem):
            if isinstance(layer, keras.layers.Conv2D):
                following = self.stem[index + 1]
                pairs.append((layer, following if isinstance(following, keras.layers.BatchNormalization) else None))
        for stage in self.stages:
            for block in stage:
                pairs += block.conv_batch_norm_pairs()
        return pairs

    def build(self, input_shape):
        shape = build_chain(self.stem, input_shape)
        for stage in self.stages:
            shape = build_chain(stage, shape)

    def call(self, images):
        x = images
        for layer in self.stem:
            # BatchNorm always in inference mode: the reference's norm_eval.
            x = layer(x, training=False) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        outputs = []
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x)
            if i >= 1:
                outputs.append(x)
        return outputs


@keras.saving.register_keras_serializable(package="keras_gfocal")
class ResNetBackbone(StemAndStages):
    """Torchvision-style ResNet-50 or ResNet-101 returning C3, C4, C5.

    Bottleneck blocks with the stride on the 3x3 conv, convs without bias,
    each followed by BatchNormalization (epsilon 1e-5); every stride-2 conv,
    the 7x7 stem conv and the 3x3 stem max-pool pad symmetrically as PyTorch
    does. As the reference trains it: the stem and the first ``frozen_stages``
    stages are frozen (conv and BatchNorm), every BatchNorm runs in inference
    mode with its running statistics frozen, and the BatchNorm scale and shift
    of the other stages train.

    Layer names follow torchvision's state-dict keys with ``_`` for ``.``
    (``layer2_0_conv2`` is ``layer2.0.conv2``); torchvision's weights load
    through ``keras_gfocal.pretrained.load_backbone_weights``.

    With ``dcn_stages`` (the reference's ``stage_with_dcn``), every
    bottleneck of a listed stage has a ``DeformableConv2D`` as its 3x3
    ``conv2``, with the same stride, padding and groups (MMDetection's
    ``dcn=dict(type='DCN')``, or ``'DCNv2'`` with ``dcn_modulated``); its
    offset conv starts at zero, so a fresh stage computes what the plain one
    does.

    Args:
        depth: 50 or 101.
        frozen_stages: 0 freezes nothing (BatchNorm statistics stay frozen),
            1 (the reference) freezes the stem and ``layer1``, up to 4.
        dcn_stages: stage numbers (1 for ``layer1`` .. 4 for ``layer4``) whose
            bottlenecks deform their 3x3 conv; ``(2, 3, 4)`` (c3-c5) in the
            R101-DCN models, default none.
        dcn_modulated: DCNv2 (offsets and a sigmoid mask) instead of DCNv1.
        fold_batch_norm: the inference form: every conv has a bias and no
            BatchNorm follows it (``keras_gfocal.inference_form`` fills it from
            a trained backbone; not for training, where the BatchNorm scale
            and shift train).
    Input: ``[B, H, W, 3]`` images normalised with the reference RGB mean/std
        (what torchvision's weights expect), H and W multiples of 32.
    Output: ``[C3, C4, C5]``: ``[B, H/8, W/8, 512]``, ``[B, H/16, W/16, 1024]``,
        ``[B, H/32, W/32, 2048]``.
    """

    def __init__(self, depth=50, frozen_stages=1, dcn_stages=(), dcn_modulated=False, fold_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"{type(self).__name__} depth must be one of {sorted(RESNET_BLOCKS)}, got {depth!r}.")
        if not 0 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in [0, 4], got {frozen_stages!r}.")
        dcn_stages = checked_dcn_stages(dcn_stages)
        self.depth = depth
        self.frozen_stages = frozen_stages
        # make_block reads them while the stages are built.
        self.dcn_stages = dcn_stages
        self.dcn_modulated = bool(dcn_modulated)
        self.fold_batch_norm = bool(fold_batch_norm)
        stem_bn = _bn("bn1", self.fold_batch_norm)
        self.stem = _conv(64, 7, 2, "conv1", use_bias=self.fold_batch_norm) + [
            *([] if stem_bn is None else [stem_bn]),
            keras.layers.ReLU(name="relu"),
            keras.layers.ZeroPadding2D(1, name="maxpool_pad"),  # inputs are >= 0 after ReLU
            keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool"),
        ]
        self.stages = []
        for stage, (blocks, width) in enumerate(zip(RESNET_BLOCKS[depth], _STAGE_WIDTHS), start=1):
            self.stages.append(
                [
                    self.make_block(
                        stage,
                        width,
                        strides=2 if stage > 1 and block == 0 else 1,
                        downsample=block == 0,
                        name=f"layer{stage}_{block}",
                    )
                    for block in range(blocks)
                ]
            )
        self.output_channels = tuple(w * _EXPANSION for w in _STAGE_WIDTHS[1:])
        if frozen_stages > 0:
            for layer in self.stem:
                layer.trainable = False
        for stage in self.stages[:frozen_stages]:
            for block in stage:
                block.trainable = False

    def make_block(self, stage, width, strides, downsample, name):
        """One bottleneck of ``layer{stage}``; subclasses change its inner convs (a ResNeXt's
        grouped 3x3, a stage's deformable 3x3).

        Args:
            stage: the stage it belongs to, 1 to 4.
            width: the stage's base width (64, 128, 256, 512); the block outputs ``4 * width`` channels.
            strides: 2 for the first block of stages 2-4, else 1.
            downsample: whether it has the projection shortcut (the first block of each stage).
            name: its layer name, ``layer{stage}_{index}``.
        """
        return Bottleneck(width, strides=strides, downsample=downsample, **self.dcn_arguments(stage), name=name)

    def dcn_arguments(self, stage):
        """The ``Bottleneck`` arguments that make ``layer{stage}``'s 3x3 convs deformable, or not,
        and its BatchNorms folded, or not."""
        return {
            "deformable": stage in self.dcn_stages,
            "modulated": self.dcn_modulated,
            "fold_batch_norm": self.fold_batch_norm,
        }

    def get_config(self):
        # The weights travel in the saved model.
        return {
            **super().get_config(),
            "depth": self.depth,
            "frozen_stages": self.frozen_stages,
            "dcn_stages": list(self.dcn_stages),
            "dcn_modulated": self.dcn_modulated,
            "fold_batch_norm": self.fold_batch_norm,
        }


@keras.saving.register_keras_serializable(package="keras_gfocal")
class Bottleneck(keras.layers.Layer):
    """1x1 -> 3x3 (stride here) -> 1x1 (x4 channels) with a projection shortcut
    when ``downsample``; BatchNorm in inference mode throughout, each computed with the conv
    before it as one convolution where it can be (``_conv_norm``).

    Args:
        width: the base width; the block outputs ``4 * width`` channels.
        strides: the 3x3 conv's stride (and the shortcut's).
        downsample: whether the shortcut is a 1x1 conv + BatchNorm (else identity).
        inner_width: channels of the 1x1 and 3x3 convs inside (default ``width``; a ResNeXt's is wider).
        groups: groups of the 3x3 conv (1, or a ResNeXt's cardinality); divides ``inner_width``.
        deformable: the 3x3 conv is a ``DeformableConv2D`` of the same stride, padding and groups.
        modulated: with ``deformable``, DCNv2 (a sigmoid mask on each sample).
        fold_batch_norm: the inference form: convs with biases, no BatchNorm.
    Input ``[B, H, W, C]``; output ``[B, H/strides, W/strides, 4 * width]``.
    """

    def __init__(
        self,
        width,
        strides=1,
        downsample=False,
        inner_width=None,
        groups=1,
        deformable=False,
        modulated=False,
        fold_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.width = width
        self.strides = strides
        self.downsample = downsample
        self.inner_width = width if inner_width is None else inner_width
        self.groups = groups
        self.deformable = bool(deformable)
        self.modulated = bool(modulated)
        self.fold_batch_norm = folded = bool(fold_batch_norm)
        inner = self.inner_width
        self.conv1 = keras.layers.Conv2D(inner, 1, use_bias=folded, name="conv1")
        self.bn1 = _bn("bn1", folded)
        if self.deformable:
            # It pads by itself (PyTorch's padding=1); no padding layer before it.
            self.pad2 = None
            self.conv2 = DeformableConv2D(
                inner,
                3,
                strides=strides,
                padding=1,
                groups=groups,
                modulated=modulated,
                use_bias=folded,
                name="conv2",
            )
        else:
            self.pad2, self.conv2 = _conv(inner, 3, strides, "conv2", groups=groups, use_bias=folded)
        self.bn2 = _bn("bn2", folded)
        self.conv3 = keras.layers.Conv2D(width * _EXPANSION, 1, use_bias=folded, name="conv3")
        self.bn3 = _bn("bn3", folded)
        if downsample:
            self.downsample_conv = keras.layers.Conv2D(
                width * _EXPANSION, 1, strides=strides, use_bias=folded, name="downsample_0"
            )
            self.downsample_bn = _bn("downsample_1", folded)

    def build(self, input_shape):
        shape = tuple(input_shape)
        inner = shape[:-1] + (self.inner_width,)
        out = self.compute_output_shape(shape)
        self.conv1.build(shape)
        _build_norm(self.bn1, inner)
        self.conv2.build(inner if self.pad2 is None else self.pad2.compute_output_shape(inner))
        _build_norm(self.bn2, out[:-1] + (self.inner_width,))
        self.conv3.build(out[:-1] + (self.inner_width,))
        _build_norm(self.bn3, out)
        if self.downsample:
            self.downsample_conv.build(shape)
            _build_norm(self.downsample_bn, out)

    def conv_batch_norm_pairs(self):
        """``(conv, BatchNormalization or None)`` for conv1, conv2, conv3 and the shortcut's conv."""
        pairs = [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]
        return pairs + ([(self.downsample_conv, self.downsample_bn)] if self.downsample else [])

    def call(self, x):
        y = keras.ops.relu(_conv_norm(self.conv1, self.bn1, x))
        y = keras.ops.relu(_conv_norm(self.conv2, self.bn2, y if self.pad2 is None else self.pad2(y)))
        y = _conv_norm(self.conv3, self.bn3, y)
        shortcut = _conv_norm(self.downsample_conv, self.downsample_bn, x) if self.downsample else x
        return keras.ops.relu(y + shortcut)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = tuple(input_shape)
        s = self.strides
        return (b, None if h is None else -(-h // s), None if w is None else -(-w // s), self.width * _EXPANSION)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "strides": self.strides,
            "downsample": self.downsample,
            "inner_width": self.inner_width,
            "groups": self.groups,
            "deformable": self.deformable,
            "modulated": self.modulated,
            "fold_batch_norm": self.fold_batch_norm,
        }
