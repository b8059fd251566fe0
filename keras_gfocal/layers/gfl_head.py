"""The GFL head: shared classification and regression towers over all levels."""

import math

import keras
from keras import ops

from keras_gfocal.layers.chain import build_chain
from keras_gfocal.layers.dgqp import DGQP, normal_init
from keras_gfocal.layers.group_norm import GroupNormalization
from keras_gfocal.layers.scale import Scale

JOINT_SCORE_SCOPE = "joint_score"


@keras.saving.register_keras_serializable(package="keras_gfocal")
class GFLHead(keras.layers.Layer):
    """Dense GFocal head, shared across pyramid levels.

    Two towers of ``stacked_convs`` x [3x3 conv (no bias), GroupNorm, ReLU];
    the classification tower ends in a 3x3 conv to ``num_classes`` logits
    (bias at prior 0.01), the regression tower in a 3x3 conv to
    ``4 * (reg_max + 1)`` distribution logits times a learnable per-level scale.
    With ``dgqp=True`` (GFocalV2) the joint score is ``sigmoid(cls) * DGQP(reg)``
    in float32, the DGQP run once over the points of all levels; with
    ``dgqp=False`` (GFocalV1) the classification logits are the joint score.
    The GroupNorm is ``keras_gfocal.layers.GroupNormalization`` (Keras' layer's
    values and weights, on rank-4 tensors only): every op of the head is one
    the TFLite GPU delegate takes.

    Args:
        num_classes: number of object classes.
        channels: tower width (256 in the reference).
        stacked_convs: convs per tower (4 in the reference).
        num_levels: pyramid levels sharing the head (one Scale each).
        reg_max: largest distribution bin ``n`` (16).
        groups: GroupNorm groups (32).
        dgqp: add the quality predictor (GFocalV2).
        dgqp_topk, dgqp_add_mean, dgqp_hidden_units: DGQP settings.
        prior_prob: initial foreground probability of the cls bias.
    Input: list of ``num_levels`` maps ``[B, H_l, W_l, channels_in]``.
    Output: dict of per-level lists: ``"cls"`` ``[B, H_l * W_l, C]`` (joint-score
        probabilities for GFocalV2, logits for GFocalV1), ``"reg"``
        ``[B, H_l * W_l, 4 * (reg_max + 1)]`` float32, rows in row-major order.
    """

    def __init__(
        self,
        num_classes,
        channels=256,
        stacked_convs=4,
        num_levels=5,
        reg_max=16,
        groups=32,
        dgqp=True,
        dgqp_topk=4,
        dgqp_add_mean=True,
        dgqp_hidden_units=64,
        prior_prob=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.channels = channels
        self.stacked_convs = stacked_convs
        self.num_levels = num_levels
        self.reg_max = reg_max
        self.groups = groups
        self.dgqp = dgqp
        self.dgqp_topk = dgqp_topk
        self.dgqp_add_mean = dgqp_add_mean
        self.dgqp_hidden_units = dgqp_hidden_units
        self.prior_prob = prior_prob

        def tower(name):
            layers = []
            for i in range(stacked_convs):
                layers += [
                    keras.layers.Conv2D(
                        channels,
                        3,
                        padding="same",
                        use_bias=False,
                        kernel_initializer=normal_init(),
                        name=f"{name}_conv{i}",
                    ),
                    GroupNormalization(groups=groups, epsilon=1e-5, name=f"{name}_gn{i}"),
                    keras.layers.ReLU(name=f"{name}_relu{i}"),
                ]
            return layers

        self.cls_tower = tower("cls")
        self.reg_tower = tower("reg")
        bias = -math.log((1.0 - prior_prob) / prior_prob)
        self.cls_out = keras.layers.Conv2D(
            num_classes,
            3,
            padding="same",
            kernel_initializer=normal_init(),
            bias_initializer=keras.initializers.Constant(bias),
            name="cls_out",
        )
        self.reg_out = keras.layers.Conv2D(
            4 * (reg_max + 1), 3, padding="same", kernel_initializer=normal_init(), name="reg_out"
        )
        self.scales = [Scale(1.0, name=f"scale_{i}") for i in range(num_levels)]
        self.quality = DGQP(reg_max, dgqp_topk, dgqp_add_mean, dgqp_hidden_units, name="dgqp") if dgqp else None

    def build(self, input_shapes):
        shape = tuple(input_shapes[0])
        tower_shape = build_chain(self.cls_tower, shape)
        build_chain(self.reg_tower, shape)
        self.cls_out.build(tower_shape)
        self.reg_out.build(tower_shape)
        for scale in self.scales:
            scale.build(())
        if self.quality is not None:
            self.quality.build((None, 4 * (self.reg_max + 1)))

    def _flatten(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1] * shape[2], shape[3]))

    def call(self, features):
        if len(features) != self.num_levels:
            raise ValueError(f"GFLHead expects {self.num_levels} feature maps, got {len(features)}.")
        cls_levels, reg_levels = [], []
        for feature, scale in zip(features, self.scales):
            cls_feat = feature
            for layer in self.cls_tower:
                cls_feat = layer(cls_feat)
            reg_feat = feature
            for layer in self.reg_tower:
                reg_feat = layer(reg_feat)
            cls_levels.append(ops.cast(self._flatten(self.cls_out(cls_feat)), "float32"))
            reg_levels.append(ops.cast(self._flatten(scale(self.reg_out(reg_feat))), "float32"))
        if self.quality is not None:
            # One DGQP over the points of every level (its ops once, not once
            # per level), each level's rows sliced back out.
            quality = self.quality(ops.concatenate(reg_levels, axis=1))
            start = 0
            for i, cls_logits in enumerate(cls_levels):
                count = cls_logits.shape[1] if cls_logits.shape[1] is not None else ops.shape(cls_logits)[1]
                # Full-int8 TFLite keeps the joint score in float (`export.tflite`).
                with keras.name_scope(JOINT_SCORE_SCOPE):
                    cls_levels[i] = ops.sigmoid(cls_logits) * quality[:, start : start + count]
                start = start + count
        return {"cls": cls_levels, "reg": reg_levels}

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "channels": self.channels,
            "stacked_convs": self.stacked_convs,
            "num_levels": self.num_levels,
            "reg_max": self.reg_max,
            "groups": self.groups,
            "dgqp": self.dgqp,
            "dgqp_topk": self.dgqp_topk,
            "dgqp_add_mean": self.dgqp_add_mean,
            "dgqp_hidden_units": self.dgqp_hidden_units,
            "prior_prob": self.prior_prob,
        }
