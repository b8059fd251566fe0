"""`GFocalDetector`: the GFocalV2 (and V1) dense detector as a `keras.Model`."""

import warnings

import numpy as np
import keras
import tensorflow as tf
from keras import ops

from keras_gfocal import boxes as box_ops
from keras_gfocal import losses, postprocess
from keras_gfocal.assigners import atss_assign
from keras_gfocal.layers import FPN, GFLHead, ResNetBackbone, TinyBackbone
from keras_gfocal.presets import PRESETS, preset_config

_BACKBONES = ("resnet50", "resnet101", "tiny")


def _replica_mean(value):
    """Mean of ``value`` over the replicas of the current tf.distribute strategy."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def validate_targets(boxes, labels, num_classes):
    """Eager checks of padded ground truth; raises ValueError naming the problem.

    Args:
        boxes: ``[B, G, 4]`` xyxy pixels.
        labels: ``[B, G]`` ints, -1 on padding rows.
    """
    boxes = np.asarray(boxes)
    labels = np.asarray(labels)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"y['boxes'] must have shape [batch, max_boxes, 4] (xyxy pixels), got {boxes.shape}.")
    if labels.shape != boxes.shape[:2]:
        raise ValueError(f"y['labels'] must have shape {boxes.shape[:2]} to match y['boxes'], got {labels.shape}.")
    valid = labels >= 0
    if np.any(labels[valid] >= num_classes):
        bad = int(labels[valid].max())
        raise ValueError(
            f"y['labels'] holds label {bad}, but the model has num_classes={num_classes}; "
            "labels must be in [0, num_classes) with -1 for padding."
        )
    b = boxes[valid]
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        idx = int(np.argmax((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])))
        raise ValueError(
            f"y['boxes'] holds a box with x2 < x1 or y2 < y1: {b[idx].tolist()}. "
            "Boxes must be xyxy pixels (x1, y1, x2, y2), not xywh."
        )


@keras.saving.register_keras_serializable(package="keras_gfocal")
class GFocalDetector(keras.Model):
    """GFocalV2 dense object detector (GFocalV1 with ``dgqp=False``).

    Backbone -> FPN (P3-P7) -> shared GFL head. Each box edge is a distribution
    over ``reg_max + 1`` bins; the DGQP reads the distributions' top-k
    statistics and scales the classification score into the joint score used
    for training (QFL) and ranking (NMS).

    Inputs: ``[B, H, W, 3]`` float images, RGB normalised with the reference
    mean and std (see `keras_gfocal.data.transforms`), H and W multiples of 32.

    Calling the model returns the raw dense outputs, the ``A`` points of all
    levels concatenated P3 first, row-major within a level:
    ``{"cls_scores": [B, A, C] joint scores (probabilities), "reg_logits":
    [B, A, 4 * (reg_max + 1)]}``; GFocalV1 models add ``"cls_logits"``.
    `predict()` returns post-processed detections: ``{"boxes" [B, D, 4] xyxy
    input pixels, "scores" [B, D], "classes" [B, D] (-1 padding),
    "num_detections" [B]}``.

    `fit()` takes ``(images, {"boxes": [B, G, 4] xyxy pixels, "labels": [B, G]
    int, -1 for padding})``.

    Args:
        num_classes: number of object classes.
        backbone: ``"resnet50"``, ``"resnet101"`` or ``"tiny"``.
        backbone_weights: for ResNets, ``"imagenet"``, a local weights file or None.
        tiny_base_width: first-stage width of the tiny backbone.
        fpn_channels, head_channels, stacked_convs, groups: neck and head sizes.
        reg_max: largest distribution bin (16).
        dgqp: GFocalV2 quality predictor on (True) or GFocalV1 (False).
        dgqp_topk, dgqp_add_mean, dgqp_hidden_units: DGQP ablation settings.
        strides: pyramid strides (8, 16, 32, 64, 128).
        atss_topk: ATSS candidates per level (9).
        qfl_weight, giou_weight, dfl_weight: loss weights (1.0, 2.0, 0.25).
        pre_nms_top_k, score_threshold, iou_threshold, max_detections:
            inference settings (1000, 0.05, 0.6, 100).
        class_names, category_ids: optional dataset metadata kept with the model.
        image_size: optional ``(H, W)`` resize canvas the model was trained
            with, kept for inference and export.
    """

    def __init__(
        self,
        num_classes,
        backbone="resnet50",
        backbone_weights=None,
        tiny_base_width=16,
        fpn_channels=256,
        head_channels=256,
        stacked_convs=4,
        groups=32,
        reg_max=16,
        dgqp=True,
        dgqp_topk=4,
        dgqp_add_mean=True,
        dgqp_hidden_units=64,
        strides=(8, 16, 32, 64, 128),
        atss_topk=9,
        qfl_weight=1.0,
        giou_weight=2.0,
        dfl_weight=0.25,
        pre_nms_top_k=1000,
        score_threshold=0.05,
        iou_threshold=0.6,
        max_detections=100,
        class_names=None,
        category_ids=None,
        image_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        if backbone not in _BACKBONES:
            raise ValueError(f"Unknown backbone {backbone!r}; choose one of {', '.join(_BACKBONES)}.")
        if len(strides) != 5:
            raise ValueError(f"strides must list the 5 pyramid levels P3-P7, got {strides!r}.")
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.tiny_base_width = tiny_base_width
        self.fpn_channels = fpn_channels
        self.head_channels = head_channels
        self.stacked_convs = stacked_convs
        self.groups = groups
        self.reg_max = reg_max
        self.dgqp = dgqp
        self.dgqp_topk = dgqp_topk
        self.dgqp_add_mean = dgqp_add_mean
        self.dgqp_hidden_units = dgqp_hidden_units
        self.strides = tuple(int(s) for s in strides)
        self.atss_topk = atss_topk
        self.qfl_weight = qfl_weight
        self.giou_weight = giou_weight
        self.dfl_weight = dfl_weight
        self.pre_nms_top_k = pre_nms_top_k
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.class_names = list(class_names) if class_names is not None else None
        self.category_ids = [int(c) for c in category_ids] if category_ids is not None else None
        self.image_size = tuple(int(v) for v in image_size) if image_size is not None else None

        if backbone == "tiny":
            self.backbone = TinyBackbone(tiny_base_width, name="backbone")
        else:
            try:
                self.backbone = ResNetBackbone(int(backbone[6:]), weights=backbone_weights, name="backbone")
            except Exception as err:  # download failures, bad files
                raise ValueError(
                    f"Could not load backbone weights {backbone_weights!r} for {backbone}: {err}. "
                    "Pass backbone_weights=None to start from random weights, or the path of a "
                    "keras.applications weights file."
                ) from err
        self.fpn = FPN(fpn_channels, name="fpn")
        self.head = GFLHead(
            num_classes,
            channels=head_channels,
            stacked_convs=stacked_convs,
            num_levels=len(self.strides),
            reg_max=reg_max,
            groups=groups,
            dgqp=dgqp,
            dgqp_topk=dgqp_topk,
            dgqp_add_mean=dgqp_add_mean,
            dgqp_hidden_units=dgqp_hidden_units,
            name="head",
        )
        self.qfl_tracker = keras.metrics.Mean(name="qfl")
        self.giou_tracker = keras.metrics.Mean(name="giou")
        self.dfl_tracker = keras.metrics.Mean(name="dfl")

    # ------------------------------------------------------------------ build

    @classmethod
    def from_preset(cls, name, num_classes, backbone_weights="default", **kwargs):
        """Builds a detector from a named preset (see `keras_gfocal.presets.PRESETS`).

        Args:
            name: preset name, e.g. ``"gfocal_v2_r50_fpn"`` or ``"gfocal_v2_tiny"``.
            num_classes: number of object classes.
            backbone_weights: ``"imagenet"``, a local file or None; ``"default"``
                takes the preset's own (ImageNet for ResNets).
            **kwargs: overrides of any constructor argument.
        """
        config = preset_config(name)
        if backbone_weights == "default":
            backbone_weights = PRESETS[name]["default_backbone_weights"]
        config.update(kwargs)
        return cls(num_classes=num_classes, backbone_weights=backbone_weights, **config)

    def build(self, input_shape):
        self._check_image_shape(input_shape)
        shape = tuple(input_shape)
        self.backbone.build(shape)
        c_shapes = [
            (shape[0], None, None, c) for c in self.backbone.output_channels
        ]
        self.fpn.build(c_shapes)
        self.head.build([(shape[0], None, None, self.fpn_channels)] * len(self.strides))
        self.built = True

    def _check_image_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(
                f"GFocalDetector expects a batch of images [batch, height, width, 3], got rank {len(shape)} "
                f"shape {shape}. Add a batch axis for a single image (image[None])."
            )
        if shape[-1] is not None and shape[-1] != 3:
            raise ValueError(f"GFocalDetector expects 3-channel RGB images, got {shape[-1]} channels (shape {shape}).")
        for axis, size in (("height", shape[1]), ("width", shape[2])):
            if size is not None and size % 32:
                raise ValueError(
                    f"Image {axis} must be a multiple of 32, got {size}; pad the images "
                    "(keras_gfocal.data.transforms pads to a multiple of 32)."
                )

    # ---------------------------------------------------------------- forward

    def call(self, images, training=False):
        self._check_image_shape(images.shape)
        features = self.fpn(self.backbone(images, training=training), training=training)
        out = self.head(features, training=training)
        cls = ops.concatenate(out["cls"], axis=1)
        reg = ops.concatenate(out["reg"], axis=1)
        if self.dgqp:
            return {"cls_scores": cls, "reg_logits": reg}
        return {"cls_scores": ops.sigmoid(cls), "reg_logits": reg, "cls_logits": cls}

    def points(self, image_height, image_width):
        """Prior points for an input size: ``(points [A, 2], strides [A], counts per level)``."""
        return box_ops.make_points(image_height, image_width, self.strides)

    def _image_hw(self, images):
        dynamic = ops.shape(images)
        h = images.shape[1] if images.shape[1] is not None else dynamic[1]
        w = images.shape[2] if images.shape[2] is not None else dynamic[2]
        return h, w

    def decode(self, images, outputs):
        """Dense outputs -> fixed-size detections in input pixels.

        Returns the `predict` dict: ``boxes [B, D, 4]`` xyxy in input pixels,
        ``scores [B, D]``, ``classes [B, D]`` (contiguous labels, -1 on
        padding), ``num_detections [B]`` and ``edge_confidence [B, D, 4]``: the
        top-1 probability of each edge's distribution (l, t, r, b), a per-edge
        localisation confidence.
        """
        h, w = self._image_hw(images)
        points, point_strides, counts = self.points(h, w)
        reg_logits = ops.cast(outputs["reg_logits"], "float32")
        boxes = postprocess.decode_boxes(points, point_strides, reg_logits, (h, w), self.reg_max)
        detections = postprocess.postprocess_detections(
            outputs["cls_scores"],
            boxes,
            counts,
            pre_nms_top_k=self.pre_nms_top_k,
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            point_features=postprocess.edge_confidence(reg_logits, self.reg_max),
        )
        detections["edge_confidence"] = detections.pop("point_features")
        return detections

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(x, self(x, training=False))

    # ---------------------------------------------------------------- training

    def compile(self, optimizer=None, **kwargs):
        """Compiles with the reference optimiser unless one is given.

        Default: SGD, learning rate 0.01 (the reference's for a global batch of
        16; use `keras_gfocal.training.reference_schedule` for warm-up, decay
        and batch scaling), momentum 0.9, weight decay 1e-4. The losses are
        built in (`compute_loss`); a ``loss`` argument is not needed.
        """
        if optimizer is None:
            optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, weight_decay=1e-4)
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded ``.keras`` file with its saved optimiser (and
        schedule), so that ``fit`` continues where training stopped."""
        from keras_gfocal.training import schedules  # noqa: F401  registers the schedules

        try:
            config = keras.saving.deserialize_keras_object(config)
        except (TypeError, ValueError) as err:
            warnings.warn(f"The saved optimiser could not be restored ({err}); call compile() before fit().")
            return
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(y, dict) and all(isinstance(v, np.ndarray) for v in y.values()):
            validate_targets(y.get("boxes"), y.get("labels"), self.num_classes)
        if isinstance(x, np.ndarray):
            self._check_image_shape(x.shape)
        return super().fit(x, y, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras learns the input shapes from the first distributed batch by
        # reducing the whole (images, targets) structure across replicas, which
        # MultiWorkerMirroredStrategy's collective reduce cannot do
        # (keras-team/keras#20585). One replica's batch has the same shapes
        # but for the batch axis, which building ignores.
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches)
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        return _with_worker_axis(self.distribute_strategy, super().train_step(data))

    def test_step(self, data):
        return _with_worker_axis(self.distribute_strategy, super().test_step(data))

    @property
    def metrics(self):
        return super().metrics + [self.qfl_tracker, self.giou_tracker, self.dfl_tracker]

    def _graph_checks(self, gt_boxes, gt_labels):
        valid = gt_labels >= 0
        bad_label = tf.reduce_any(valid & (gt_labels >= self.num_classes))
        inverted = tf.reduce_any(
            valid & ((gt_boxes[..., 2] < gt_boxes[..., 0]) | (gt_boxes[..., 3] < gt_boxes[..., 1]))
        )
        return [
            tf.debugging.Assert(
                tf.logical_not(bad_label),
                [f"GFocalDetector: a label is >= num_classes={self.num_classes}; labels must be in "
                 "[0, num_classes) with -1 for padding. Max label:", tf.reduce_max(gt_labels)],
            ),
            tf.debugging.Assert(
                tf.logical_not(inverted),
                ["GFocalDetector: a ground-truth box has x2 < x1 or y2 < y1; boxes must be xyxy pixels."],
            ),
        ]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """QFL + 2 GIoU + 0.25 DFL with the reference's normalisers.

        QFL is divided by the number of positives, GIoU and DFL by the sum of
        the positives' quality weights (max class joint score, detached); both
        normalisers are averaged across replicas so that a batch split across
        devices gives the same loss and gradient as on one device.
        """
        if y is None:
            return None
        gt_boxes = tf.cast(y["boxes"], tf.float32)
        gt_labels = tf.cast(y["labels"], tf.int32)
        with tf.control_dependencies(self._graph_checks(gt_boxes, gt_labels)):
            gt_valid = tf.identity(gt_labels >= 0)

        h, w = self._image_hw(x)
        points, point_strides, counts = self.points(h, w)
        anchors = box_ops.points_to_anchors(points, point_strides)
        assigned = atss_assign(anchors, counts, gt_boxes, gt_valid, topk=self.atss_topk)  # [B, A]
        positive = assigned >= 0
        idx = tf.maximum(assigned, 0)
        target_boxes = tf.gather(gt_boxes, idx, batch_dims=1)  # [B, A, 4]
        target_labels = tf.where(positive, tf.gather(gt_labels, idx, batch_dims=1), self.num_classes)

        cls_scores = tf.cast(y_pred["cls_scores"], tf.float32)
        reg_logits = tf.cast(y_pred["reg_logits"], tf.float32)
        num_bins = self.reg_max + 1

        # Everything below in stride units, as the reference computes the box losses.
        stride = point_strides[None, :, None]
        centers = (points / point_strides[:, None])[None]  # [1, A, 2]
        pred_dist = postprocess.distribution_expectation(reg_logits, self.reg_max)
        pred_boxes = box_ops.distance_to_box(centers, pred_dist)  # [B, A, 4]
        target_boxes = target_boxes / stride
        iou_targets = box_ops.aligned_iou(tf.stop_gradient(pred_boxes), target_boxes)
        iou_targets = tf.where(positive, iou_targets, 0.0)
        pos_f = tf.cast(positive, tf.float32)

        flat = lambda t: tf.reshape(t, [-1] + t.shape[2:].as_list())  # noqa: E731
        cls_for_qfl = y_pred["cls_logits"] if not self.dgqp else cls_scores
        qfl = losses.quality_focal_loss(
            flat(tf.cast(cls_for_qfl, tf.float32)), flat(target_labels), flat(iou_targets),
            from_logits=not self.dgqp,
        )
        num_pos = tf.maximum(_replica_mean(tf.reduce_sum(pos_f)), 1.0)
        loss_qfl = tf.reduce_sum(qfl) / num_pos

        weights = tf.stop_gradient(tf.reduce_max(cls_scores, axis=-1)) * pos_f  # [B, A]
        weight_sum = _replica_mean(tf.reduce_sum(weights))
        safe_sum = tf.where(weight_sum > 0.0, weight_sum, 1.0)
        giou = losses.giou_loss(flat(pred_boxes), flat(target_boxes))
        loss_giou = tf.reduce_sum(giou * flat(weights)) / safe_sum
        target_dist = box_ops.box_to_distance(centers, target_boxes, self.reg_max - 0.1)  # [B, A, 4]
        dfl = losses.distribution_focal_loss(
            tf.reshape(reg_logits, [-1, num_bins]), tf.reshape(target_dist, [-1])
        )
        dfl_weights = tf.repeat(tf.reshape(weights, [-1]), 4)
        loss_dfl = tf.reduce_sum(dfl * dfl_weights) / 4.0 / safe_sum

        loss_qfl = self.qfl_weight * loss_qfl
        loss_giou = self.giou_weight * loss_giou
        loss_dfl = self.dfl_weight * loss_dfl
        self.qfl_tracker.update_state(loss_qfl)
        self.giou_tracker.update_state(loss_giou)
        self.dfl_tracker.update_state(loss_dfl)
        total = loss_qfl + loss_giou + loss_dfl
        if self.losses:
            total = total + tf.add_n([tf.cast(l, tf.float32) for l in self.losses])
        return _scale_for_replicas(total)

    # ----------------------------------------------------------- serialisation

    def get_config(self):
        config = {
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "backbone_weights": None,  # the weights travel in the saved file
            "tiny_base_width": self.tiny_base_width,
            "fpn_channels": self.fpn_channels,
            "head_channels": self.head_channels,
            "stacked_convs": self.stacked_convs,
            "groups": self.groups,
            "reg_max": self.reg_max,
            "dgqp": self.dgqp,
            "dgqp_topk": self.dgqp_topk,
            "dgqp_add_mean": self.dgqp_add_mean,
            "dgqp_hidden_units": self.dgqp_hidden_units,
            "strides": list(self.strides),
            "atss_topk": self.atss_topk,
            "qfl_weight": self.qfl_weight,
            "giou_weight": self.giou_weight,
            "dfl_weight": self.dfl_weight,
            "pre_nms_top_k": self.pre_nms_top_k,
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
            "class_names": self.class_names,
            "category_ids": self.category_ids,
            "image_size": list(self.image_size) if self.image_size else None,
        }
        return {"name": self.name, "trainable": self.trainable, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _with_worker_axis(strategy, logs):
    """Scalar logs -> shape [1] under multi-worker training.

    Keras averages multi-worker step outputs along axis 0, which a scalar does
    not have (keras-team/keras#20585); with it, the average over the workers'
    values comes out a scalar again. Elsewhere the logs pass unchanged.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode():
        return {k: ops.reshape(v, [1]) if len(ops.shape(v)) == 0 else v for k, v in logs.items()}
    return logs


def _scale_for_replicas(loss):
    # Gradients are summed over replicas, so each replica contributes 1/R.
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return loss
    return loss / tf.cast(ctx.num_replicas_in_sync, loss.dtype)
