"""How an image enters a model: one decision for every way to run one.

A model trained by this package records its canvas (``model.image_size``): images are
resized keep-ratio into it and padded to one static shape. A model without one (as
``gfocal convert`` makes from a reference checkpoint) is run with the reference's
test-time resize: per image, short side <= 800 and long side <= 1333 whatever the
orientation, padded to the image's own multiple of 32; its published AP depends on it.

``input_resize(model, image_size)`` makes that choice once. Evaluation, ``load_detector``,
the SavedModel export and the analysis run what it returns, and every export's
metadata describes it. TFLite and ONNX files have one fixed input shape and cannot
follow an image's orientation: for them, ``fixed_canvas=True`` falls back to the
reference's landscape canvas, and their metadata says that it replaces the test resize.
"""

import dataclasses

from keras_gfocal.data import transforms

_TEST_RESIZE = (
    "keep aspect ratio with short side <= test_scale[0] and long side <= test_scale[1] "
    "(bilinear, no antialias), scale = min(short / short_side, long / long_side)"
)
_CANVAS_RESIZE = "keep aspect ratio to fit image_size (bilinear, no antialias), scale = min(H/h, W/w)"


@dataclasses.dataclass(frozen=True)
class InputResize:
    """One of two resize rules; exactly one of the two fields is set.

    Attributes:
        image_size: ``(H, W)`` fixed canvas: every image is resized keep-ratio to fit it
            and padded bottom/right to ``canvas_size``.
        test_scale: ``(short, long)`` limits of the reference's test-time resize: each
            image is padded to its own resized size rounded up to a multiple of 32.
        replaces_test_scale: on a fixed canvas, the test resize the model was meant for
            (a model without a canvas exported to a fixed-shape format), else None.
    """

    image_size: tuple = None
    test_scale: tuple = None
    replaces_test_scale: tuple = None

    def __post_init__(self):
        if (self.image_size is None) == (self.test_scale is None):
            raise ValueError("InputResize needs exactly one of image_size and test_scale.")

    @property
    def canvas_size(self):
        """``(Hp, Wp)`` padded canvas of a fixed ``image_size``; None for the test resize."""
        return None if self.image_size is None else transforms.padded_size(self.image_size, 32)

    def preprocess(self, image):
        """One uint8 ``[h, w, 3]`` image -> ``(canvas [Hp, Wp, 3] float32 normalised, scale)``;
        boxes on the canvas map back to the image by dividing by ``scale``."""
        return transforms.preprocess_image(image, self.image_size, test_scale=self.test_scale)

    def dataset_options(self):
        """The keyword arguments of ``keras_gfocal.data.make_dataset(..., training=False)``."""
        if self.test_scale is not None:
            return {"test_scale": self.test_scale}
        return {"image_size": self.image_size}

    def metadata(self):
        """The input contract for an export's metadata: ``image_size``, ``canvas_size``,
        ``test_scale`` (each None where it does not apply) and ``preprocessing``."""
        fixed = self.image_size is not None
        described = {
            "image_size": list(self.image_size) if fixed else None,
            "canvas_size": list(self.canvas_size) if fixed else None,
            "test_scale": None if fixed else list(self.test_scale),
            "preprocessing": {
                "resize": _CANVAS_RESIZE if fixed else _TEST_RESIZE,
                "pad": (
                    "bottom/right to canvas_size; canvas inputs are padded with the mean colour"
                    if fixed
                    else "bottom/right with zeros (after normalising) to a multiple of 32"
                ),
            },
        }
        if self.replaces_test_scale is not None:
            short, long = self.replaces_test_scale
            described["preprocessing"]["note"] = (
                f"the model has no training canvas and was meant for the reference's test resize "
                f"(short side <= {short}, long side <= {long}, per image); a fixed-shape file cannot follow "
                f"an image's orientation, so portrait images come out smaller than the reference's"
            )
        return described

    @classmethod
    def from_metadata(cls, metadata):
        """The rule an export's metadata describes (files of earlier releases hold ``image_size`` only)."""
        if metadata.get("image_size"):
            return cls(image_size=tuple(int(v) for v in metadata["image_size"]))
        return cls(test_scale=tuple(int(v) for v in metadata["test_scale"]))


def input_resize(model, image_size=None, fixed_canvas=False):
    """The resize rule to run ``model`` with.

    Args:
        model: a ``GFocalDetector`` (anything with an ``image_size`` attribute, None
            for a model without a training canvas).
        image_size: ``(H, W)`` canvas overriding the model's.
        fixed_canvas: the caller needs one input shape (TFLite, ONNX): a model
            without a canvas then gets ``transforms.REFERENCE_IMAGE_SIZE``.
    Returns:
        ``InputResize``: the argument, else the model's canvas, else the reference's
        test resize (``transforms.REFERENCE_TEST_SCALE``), or with ``fixed_canvas``
        the reference's canvas.
    """
    size = image_size or getattr(model, "image_size", None)
    if size:
        return InputResize(image_size=tuple(int(v) for v in size))
    # Read at call time, so that tests can shrink the reference's limits.
    if fixed_canvas:
        return InputResize(
            image_size=tuple(transforms.REFERENCE_IMAGE_SIZE),
            replaces_test_scale=tuple(transforms.REFERENCE_TEST_SCALE),
        )
    return InputResize(test_scale=tuple(int(v) for v in transforms.REFERENCE_TEST_SCALE))
