"""One interface over every model format: ``detector.detect(image)``.

``load_detector(path)`` opens a ``.keras`` file, a SavedModel folder (the
``<name>/<version>/`` folder or its parent), a ``.tflite`` or an ``.onnx`` file
and returns an object whose ``detect`` takes one uint8 RGB image ``[h, w, 3]``
and returns its detections in that image's pixels, so that ``gfocal predict``
and ``gfocal evaluate`` treat every format the same way.
"""

import os
import zipfile

import numpy as np

from keras_gfocal.data.input_resize import InputResize, input_resize
from keras_gfocal.export import graphs, numpy_postprocess
from keras_gfocal.export.metadata import METADATA_NAME, read_metadata
from keras_gfocal.postprocess import DETECTION_KEYS

# `detect` returns one image's detections: no batch axis, no padding, no count.
IMAGE_DETECTION_KEYS = tuple(k for k in DETECTION_KEYS if k != "num_detections")


def _check_image(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detect expects a uint8 RGB image, got dtype {image.dtype}; convert 0..255 pixels to uint8.")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"detect expects one RGB image [height, width, 3], got shape {image.shape}.")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"detect got an empty image of shape {image.shape}.")
    return image


class Detector:
    """Base class. Attributes: ``class_names``, ``category_ids``, ``resize`` (a
    ``keras_gfocal.data.input_resize.InputResize``), its ``image_size`` (None for
    the reference's test resize) and ``test_scale`` (None on a fixed canvas), ``format``,
    ``precision`` (what the network computes in: ``"float32"``, or ``"bfloat16"``
    / ``"float16"`` for a SavedModel exported with that ``precision``).

    ``detect(image)`` returns a dict of NumPy arrays for the ``n`` detections,
    ``IMAGE_DETECTION_KEYS`` (the names of ``GFocalDetector.predict`` and every
    export, see ``keras_gfocal.postprocess``): ``boxes [n, 4]`` xyxy in the
    image's pixels, ``scores [n]``, ``labels [n]`` (contiguous class index),
    ``category_ids [n]`` (the dataset's ids) and ``edge_confidence [n, 4]``.
    """

    format = None

    def __init__(self, metadata):
        self.metadata = metadata
        self.class_names = list(metadata["class_names"])
        self.category_ids = [int(c) for c in metadata["category_ids"]]
        self.resize = InputResize.from_metadata(metadata)
        self.image_size = self.resize.image_size
        self.test_scale = self.resize.test_scale
        # Exports written before the metadata recorded a precision computed in float32.
        self.precision = metadata.get("precision", "float32")

    def detect(self, image):
        raise NotImplementedError

    def _finish(self, boxes, scores, labels, scale, shape, extra=None):
        """Canvas-pixel detections -> image pixels, with category ids."""
        labels = np.asarray(labels, np.int32)
        boxes = np.clip(np.asarray(boxes, np.float32) / scale, 0, [shape[1], shape[0]] * 2)
        out = {
            "boxes": boxes.reshape(-1, 4),
            "scores": np.asarray(scores, np.float32),
            "labels": labels,
            "category_ids": np.asarray(self.category_ids, np.int32)[labels] if len(labels) else labels,
        }
        out.update(extra or {})
        return out

    def _finish_detections(self, outputs, scale, shape):
        """The canvas-contract detection outputs of one image (batch axis of 1) -> ``_finish``."""
        n = int(outputs["num_detections"][0])
        return self._finish(
            outputs["boxes"][0, :n],
            outputs["scores"][0, :n],
            outputs["labels"][0, :n],
            scale,
            shape,
            {"edge_confidence": outputs["edge_confidence"][0, :n]},
        )


class KerasDetector(Detector):
    """A ``GFocalDetector`` (in memory or from a ``.keras`` file).

    Images are resized as ``keras_gfocal.data.input_resize.input_resize(model,
    image_size)`` says: into ``image_size`` (the argument, else the model's
    training canvas), or for a model without one (e.g. converted from a
    reference checkpoint) by the reference's test-time resize (``test_scale``
    ``(800, 1333)``: long side <= 1333, short side <= 800, padded to the image's
    own multiple of 32); ``image_size`` is then None.
    """

    format = "keras"

    def __init__(self, model, image_size=None):
        from keras_gfocal.export.metadata import build_metadata

        self.model = model
        # Folded once: the weights of a loaded model do not change.
        self._inference_form = model.inference_form()
        super().__init__(build_metadata(model, input_resize(model, image_size), "keras"))

    def detect(self, image):
        image = _check_image(image)
        # Keras's predict function relaxes its input shape after the second size seen.
        canvas, scale = self.resize.preprocess(image)
        det = {k: np.asarray(v)[0] for k, v in self._inference_form.predict_on_batch(np.asarray(canvas)[None]).items()}
        n = int(det["num_detections"])
        return self._finish(
            det["boxes"][:n],
            det["scores"][:n],
            det["labels"][:n],
            float(scale),
            image.shape,
            {"edge_confidence": det["edge_confidence"][:n]},
        )


class SavedModelDetector(Detector):
    """An exported SavedModel, through its ``serving_default`` signature."""

    format = "saved_model"

    def __init__(self, path):
        import tensorflow as tf

        super().__init__(read_metadata(path))
        self.signature = tf.saved_model.load(path).signatures["serving_default"]

    def detect(self, image):
        image = _check_image(image)
        det = {k: v.numpy()[0] for k, v in self.signature(images=image[None]).items()}
        n = int(det["num_detections"])
        if "category_ids" not in det:  # exported by 0.1, which named the ids ``classes``
            det["category_ids"] = det["classes"]
        return {k: det[k][:n] for k in IMAGE_DETECTION_KEYS}


class TFLiteDetector(Detector):
    """A ``.tflite`` export, run by the LiteRT interpreter (``num_threads``
    defaults to every core, as an app on a phone would use its big cores)."""

    format = "tflite"

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(read_metadata(path))
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_dtype = np.uint8 if self.metadata["input"]["dtype"] == "uint8" else np.float32

    def detect(self, image):
        image = _check_image(image)
        canvas, scale = graphs.canvas_from_image(image, self.image_size, self.input_dtype)
        raw = self.runner(pixels=canvas[None])
        out = {name: raw[f"output_{i}"] for i, name in enumerate(self.metadata["outputs"])}
        if not self.metadata["nms"]:
            det = numpy_postprocess.postprocess(out["cls_scores"], out["reg_logits"], self.metadata)
            return self._finish(
                det["boxes"],
                det["scores"],
                det["labels"],
                scale,
                image.shape,
                {"edge_confidence": det["edge_confidence"]},
            )
        return self._finish_detections(out, scale, image.shape)


class OnnxDetector(Detector):
    """An ``.onnx`` export, run by onnxruntime."""

    format = "onnx"

    def __init__(self, path):
        import onnxruntime

        super().__init__(read_metadata(path))
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def detect(self, image):
        image = _check_image(image)
        canvas, scale = graphs.canvas_from_image(image, self.image_size)
        out = dict(zip(self.output_names, self.session.run(None, {self.input_name: canvas[None]})))
        return self._finish_detections(out, scale, image.shape)


class ModelFileError(ValueError):
    """A model file or folder exists but cannot be loaded: damaged, truncated or not a model."""


def _damaged(path, kind, err):
    message = " ".join(str(err).split())[:300] or type(err).__name__
    return ModelFileError(f"Cannot load {path}: the {kind} is damaged or not a model ({type(err).__name__}: {message})")


def load_detector(path, image_size=None):
    """Opens any model this package writes; see the module docstring.

    Raises:
        FileNotFoundError: no such file or folder, or an export without its metadata.
        ModelFileError (a ValueError): the file exists but is damaged (truncated,
            corrupt, not a model) -- the message says so and names the file.
        ValueError: an unknown format.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model not found: {path}")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            versions = sorted((d for d in os.listdir(path) if d.isdigit()), key=int)
            if not versions:
                raise ValueError(f"{path} is neither a SavedModel folder nor a <name>/ folder of numbered versions.")
            path = os.path.join(path, versions[-1])
        if not os.path.exists(os.path.join(path, METADATA_NAME)):
            raise ValueError(f"{path} is a SavedModel without {METADATA_NAME}; export it with `gfocal export`.")
        return _open(SavedModelDetector, path, "SavedModel")
    if path.endswith(".tflite"):
        return _open(TFLiteDetector, path, ".tflite file")
    if path.endswith(".onnx"):
        return _open(OnnxDetector, path, ".onnx file")
    if path.endswith(".keras"):
        return KerasDetector(load_keras_model(path), image_size)
    raise ValueError(f"Unknown model format: {path}; expected a .keras, .tflite or .onnx file or a SavedModel folder.")


def load_keras_model(path):
    """A ``GFocalDetector`` from a ``.keras`` file (``safe_mode``: no code from the file runs).

    Raises:
        FileNotFoundError: no such file.
        ModelFileError (a ValueError): the file is damaged (truncated, not a
            zip archive, not a model); the message names the file.
    """
    import keras

    import keras_gfocal.detector  # noqa: F401  registers the serialisable classes

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model not found: {path}")

    def open_keras(p):
        if not zipfile.is_zipfile(p):
            raise ValueError("not a complete zip archive (truncated or overwritten?)")
        return keras.saving.load_model(p, safe_mode=True)

    return _open(open_keras, path, ".keras file")


def _open(opener, path, kind):
    """Runs ``opener(path)``; an error from a damaged file becomes one ``ModelFileError``."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        return opener(path)
    except FileNotFoundError:  # a missing metadata file: its message says what to do
        raise
    except (
        ValueError,
        OSError,
        KeyError,
        TypeError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        DecodeError,
        tf.errors.OpError,
    ) as err:
        raise _damaged(path, kind, err) from err
    except Exception as err:
        if type(err).__module__.startswith("onnxruntime"):  # InvalidProtobuf, Fail, ...: not builtin types
            raise _damaged(path, kind, err) from err
        raise
