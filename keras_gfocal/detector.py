"""``GFocalDetector``: the GFocalV2 (and V1) dense detector as a ``keras.Model``."""

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_gfocal import boxes as box_ops
from keras_gfocal import distributions, postprocess
from keras_gfocal.detection_loss import GFocalLoss, scale_for_replicas, validate_targets
from keras_gfocal.layers import FPN, GFLHead
from keras_gfocal.layers.batch_norm_folding import can_fold, fold_batch_norms
from keras_gfocal.presets import preset_backbone, preset_config
from keras_gfocal.schedules import reference_optimizer


@keras.saving.register_keras_serializable(package="keras_gfocal")
class GFocalDetector(keras.Model):
    """GFocalV2 dense object detector (GFocalV1 with ``dgqp=False``).

    Backbone -> FPN (P3-P7) -> shared GFL head. Each box edge is a distribution
    over ``reg_max + 1`` bins; the DGQP reads the distributions' top-k
    statistics and scales the classification score into the joint score used
    for training (QFL) and ranking (NMS).

    Inputs: ``[B, H, W, 3]`` float images, RGB normalised with the reference
    mean and std (``keras_gfocal.image.normalize_image``), H and W multiples of 32.

    Calling the model returns the raw dense outputs, the ``A`` points of all
    levels concatenated P3 first, row-major within a level:
    ``{"cls_scores": [B, A, C] joint scores (probabilities), "reg_logits":
    [B, A, 4 * (reg_max + 1)]}``; GFocalV1 models add ``"cls_logits"``.
    ``predict()`` returns post-processed detections (see ``decode``): ``{"boxes"
    [B, D, 4] xyxy input pixels, "scores" [B, D], "labels" [B, D] contiguous
    class index, "category_ids" [B, D] dataset id (both -1 on padding),
    "num_detections" [B], "edge_confidence" [B, D, 4]}``.

    ``fit()`` takes ``(images, {"boxes": [B, G, 4] xyxy pixels, "labels": [B, G]
    int, -1 for padding, optionally "image_size": [B, 2] each image's resized
    (height, width) before padding})``; ``keras_gfocal.data.make_dataset``
    yields exactly that.

    Args:
        backbone: a ``keras_gfocal.layers.Backbone``: a serialisable layer that
            takes the normalised image batch and returns ``[C3, C4, C5]``
            (strides 8, 16, 32) and declares their ``output_channels``.
            Presets build one (``from_preset``).
        num_classes: number of object classes.
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
            with, kept for inference and export; None means the reference's
            per-image test resize.
    """

    def __init__(
        self,
        backbone,
        num_classes,
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
        _check_backbone(backbone)
        if len(strides) != 5:
            raise ValueError(f"strides must list the 5 pyramid levels P3-P7, got {strides!r}.")
        self.backbone = backbone
        self.num_classes = num_classes
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
        """Builds a detector from a named preset (see ``keras_gfocal.presets.PRESETS``).

        Args:
            name: preset name, e.g. ``"gfocal_v2_r50_fpn"`` or ``"gfocal_v2_tiny"``.
            num_classes: number of object classes.
            backbone_weights: what the preset's backbone loads: ``"imagenet"``,
                a local file or None; ``"default"`` takes the preset's own
                (torchvision's ImageNet weights for the ResNets).
            **kwargs: overrides of any constructor argument (``backbone=`` a
                layer replaces the preset's backbone).
        """
        config = preset_config(name)
        if "backbone" not in kwargs:
            config["backbone"] = preset_backbone(name, backbone_weights)
        config.update(kwargs)
        return cls(num_classes=num_classes, **config)

    def build(self, input_shape):
        self._check_image_shape(input_shape)
        shape = tuple(input_shape)
        if not self.backbone.built:  # a deserialised or pretrained backbone comes built
            self.backbone.build(shape)
        c_shapes = [(shape[0], None, None, c) for c in self.backbone.output_channels]
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

    def decode(self, images, outputs, score_threshold=None, return_point_indices=False):
        """Dense outputs -> fixed-size detections in input pixels.

        Args:
            images: ``[B, H, W, 3]`` the model's input (only its shape is read).
            outputs: the model's raw outputs on ``images``: ``cls_scores [B, A, C]``
                and ``reg_logits [B, A, 4 * (reg_max + 1)]``.
            score_threshold: the score a detection must exceed; None: the
                model's (``self.score_threshold``).
            return_point_indices: add ``point_indices`` (off by default, so the
                exports' outputs stay ``DETECTION_KEYS``).
        Returns:
            the ``predict`` dict, the ``keras_gfocal.postprocess.DETECTION_KEYS``
            that every export returns too: ``boxes [B, D, 4]`` xyxy in input
            pixels, ``scores [B, D]``, ``labels [B, D]`` (contiguous class index,
            -1 on padding), ``category_ids [B, D]`` (the dataset's id of each
            label, ``self.category_ids``; -1 on padding), ``num_detections [B]``
            and ``edge_confidence [B, D, 4]``: the top-1 probability of each
            edge's distribution (l, t, r, b), a per-edge localisation
            confidence; with ``return_point_indices``, also ``point_indices``
            int32 ``[B, D]``: the row of ``outputs`` (the point's flat index over
            all levels, ``self.points`` order) each detection comes from, -1 on
            padding.
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
            score_threshold=self.score_threshold if score_threshold is None else float(score_threshold),
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            point_features=distributions.edge_confidence(reg_logits, self.reg_max),
            return_point_indices=return_point_indices,
        )
        detections["edge_confidence"] = detections.pop("point_features")
        detections["category_ids"] = postprocess.labels_to_category_ids(detections["labels"], self.category_ids)
        return detections

    def localization_quality(self, reg_logits):
        """The DGQP's quality of each point's box, from its regression logits (GFocalV2 only).

        Args:
            reg_logits: ``[..., 4 * (reg_max + 1)]`` rows of ``outputs["reg_logits"]``.
        Returns:
            float32 ``[..., 1]`` in ``(0, 1)``: the factor that scaled the
            classification probability into ``cls_scores``.
        Raises:
            ValueError: a GFocalV1 model (``dgqp=False``), which has no quality.
        """
        if self.head.quality is None:
            raise ValueError("localization_quality needs a GFocalV2 model (dgqp=True); this one is GFocalV1.")
        return self.head.quality(reg_logits)

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(x, self(x, training=False))

    def predict(self, x, *args, **kwargs):
        """Keras' ``predict``, run by ``inference_form()``: the same detections, faster."""
        form = self.inference_form()
        if form is self:
            return super().predict(x, *args, **kwargs)
        return form.predict(x, *args, **kwargs)

    def inference_form(self):
        """This detector for inference only: its backbone's frozen BatchNorms folded into the
        convs before them (``keras_gfocal.layers.batch_norm_folding``), everything else the same.

        Its outputs equal this model's to float rounding. One form is kept and refilled with
        this model's current weights on each call, so it is never stale after training, and
        Keras' traced ``predict`` function of it is reused. It is not a part of this model: it
        is neither saved with it nor trained. ``predict``, the SavedModel export and
        ``keras_gfocal.export.load_detector`` run it.

        Returns:
            a built ``GFocalDetector`` with a ``fold_batch_norm=True`` backbone, or this model
            itself when it has nothing to fold: a backbone without BatchNorm (``TinyBackbone``),
            no weights yet (not built: ``predict`` builds it on its first batch), or a mixed
            dtype policy (fold first, then ``keras_gfocal.precision.with_precision``, as the
            SavedModel export does).
        """
        if not (self.built and can_fold(self.backbone)) or self.dtype_policy.name != "float32":
            return self
        kept = self.__dict__.get("_inference_form")
        form = None if kept is None else kept.model
        with self.distribute_strategy.scope():
            backbone = fold_batch_norms(self.backbone, into=None if form is None else form.backbone)
            if form is None:
                form = GFocalDetector(**{**self.get_config(), "backbone": backbone})
                form.build((None, None, None, 3))
                # Neither tracked (not through keras' __setattr__) nor saved (.keras files save
                # every attribute that is a Keras object or a container of them).
                object.__setattr__(self, "_inference_form", _NotSaved(form))
            for part, form_part in ((self.fpn, form.fpn), (self.head, form.head)):
                for source, target in zip(part.weights, form_part.weights, strict=True):
                    target.assign(source)
        return form

    # ---------------------------------------------------------------- training

    def compile(self, optimizer=None, **kwargs):
        """Compiles with the reference optimiser unless one is given.

        Default: ``keras_gfocal.optimizers.TorchSGD`` (``torch.optim.SGD``'s
        rule), learning rate 0.01 (the reference's for a global batch of 16;
        use ``keras_gfocal.schedules.reference_schedule`` for warm-up, decay and
        batch scaling), momentum 0.9, L2 weight decay 1e-4. The losses are
        built in (``compute_loss``); a ``loss`` argument is not needed.
        """
        if optimizer is None:
            optimizer = reference_optimizer(0.01)
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded ``.keras`` file with its saved optimiser (and
        schedule), so that ``fit`` continues where training stopped."""
        try:
            config = keras.saving.deserialize_keras_object(config)
        except (TypeError, ValueError) as err:
            warnings.warn(
                f"The saved optimiser could not be restored ({err}); call compile() before fit().", stacklevel=2
            )
            return
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(y, dict) and all(isinstance(v, np.ndarray) for v in y.values()):
            validate_targets(y.get("boxes"), y.get("labels"), self.num_classes, y.get("image_size"))
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
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
            if strategy is not None:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], data_batch)
        if strategy is None:
            # Without a strategy Keras leaves building to the first trace of the
            # train step; the variables it then creates make TensorFlow trace
            # the whole step a second time (half of the first step's ~25 s on
            # the tiny model). Built here, the step is traced once.
            if data_batch is not None:
                self._build_before_tracing(data_batch)
            return None
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _build_before_tracing(self, data_batch):
        images = data_batch[0] if isinstance(data_batch, (tuple, list)) else data_batch
        if not self.built:
            if getattr(images, "shape", None) is None:
                return  # not an image batch: the trace builds (and reports what is wrong)
            self.build(tuple(images.shape))
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        return _with_worker_axis(self.distribute_strategy, super().train_step(data))

    def test_step(self, data):
        return _with_worker_axis(self.distribute_strategy, super().test_step(data))

    @property
    def metrics(self):
        return super().metrics + [self.qfl_tracker, self.giou_tracker, self.dfl_tracker]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """QFL + 2 GIoU + 0.25 DFL with the reference's normalisers.

        ``y``: ``{"boxes" [B, G, 4], "labels" [B, G]}`` and optionally
        ``"image_size" [B, 2]``, each image's resized (height, width) before
        padding; points over an image's padding then take no part. See
        ``keras_gfocal.detection_loss.GFocalLoss`` for the targets and the
        normalisers (averaged across replicas, so that a batch split across
        devices gives the same loss and gradient as on one device).
        """
        if y is None:
            return None
        terms = GFocalLoss(
            self.num_classes,
            strides=self.strides,
            reg_max=self.reg_max,
            atss_topk=self.atss_topk,
            qfl_weight=self.qfl_weight,
            giou_weight=self.giou_weight,
            dfl_weight=self.dfl_weight,
        )(y_pred, y, self._image_hw(x))
        self.qfl_tracker.update_state(terms["qfl"])
        self.giou_tracker.update_state(terms["giou"])
        self.dfl_tracker.update_state(terms["dfl"])
        total = terms["qfl"] + terms["giou"] + terms["dfl"]
        if self.losses:
            total = total + tf.add_n([tf.cast(loss, tf.float32) for loss in self.losses])
        return scale_for_replicas(total)

    # ----------------------------------------------------------- serialisation

    def get_config(self):
        config = {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
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
        config = dict(config)
        backbone = config.get("backbone")
        if not isinstance(backbone, dict):
            raise ValueError(
                f"This model was saved by keras-gfocal 0.1 (backbone named {backbone!r}), whose network is not "
                "the reference's (ReLU before P7, stride-2 padding, caffe-style ResNet), so its weights cannot be "
                "loaded into this version. Retrain it with this version, or load it with keras-gfocal 0.1."
            )
        config["backbone"] = keras.saving.deserialize_keras_object(backbone)
        return cls(**config)


class _NotSaved:
    """Holds a model that must not be saved as part of its owner."""

    __slots__ = ("model",)

    def __init__(self, model):
        self.model = model


def _check_backbone(backbone):
    """ValueError unless ``backbone`` keeps the ``keras_gfocal.layers.Backbone`` contract."""
    if isinstance(backbone, str):
        raise ValueError(
            f"backbone must be a layer, not the name {backbone!r}: use GFocalDetector.from_preset(...) or pass "
            "a backbone object, e.g. keras_gfocal.layers.ResNetBackbone(50)."
        )
    channels = getattr(backbone, "output_channels", None)
    if not isinstance(backbone, keras.layers.Layer) or channels is None or len(channels) != 3:
        raise ValueError(
            f"backbone must be a keras Layer that returns [C3, C4, C5] and declares their output_channels "
            f"(see keras_gfocal.layers.Backbone), got {type(backbone).__name__}."
        )


def _with_worker_axis(strategy, logs):
    """Scalar logs -> shape [1] under multi-worker training.

    Keras averages multi-worker step outputs along axis 0, which a scalar does
    not have (keras-team/keras#20585); with it, the average over the workers'
    values comes out a scalar again. Elsewhere the logs pass unchanged.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode():
        return {k: ops.reshape(v, [1]) if len(ops.shape(v)) == 0 else v for k, v in logs.items()}
    return logs
