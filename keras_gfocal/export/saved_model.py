"""SavedModel export for TF Serving: uint8 images or encoded bytes in, detections out."""

import os

import tensorflow as tf

from keras_gfocal.data.input_resize import input_resize
from keras_gfocal.export import graphs
from keras_gfocal.export.metadata import build_metadata, write_metadata
from keras_gfocal.precision import with_precision

# In 0.1 the signatures named the category ids ``classes``; TF Serving
# clients read outputs by name, so the old name stays for one release.
DEPRECATED_ALIASES = {"classes": "category_ids"}


def _with_deprecated_aliases(detections):
    for old, new in DEPRECATED_ALIASES.items():
        detections[old] = tf.identity(detections[new], name=old)
    return detections


class _Serving(tf.Module):
    def __init__(self, model, resize):
        super().__init__()
        # Save the weights only: tracking the model itself would also save a
        # compiled model's optimiser slots (twice the size, no use to a server).
        object.__setattr__(self, "model", model)
        self.weights = [w.value for w in model.weights]
        object.__setattr__(self, "resize", resize)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_images(self, images):
        return _with_deprecated_aliases(graphs.detect_end_to_end(self.model, images, self.resize))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(self, image_bytes):
        return _with_deprecated_aliases(graphs.detect_encoded(self.model, image_bytes, self.resize))


def export_saved_model(model, out, name="gfocal", version=1, image_size=None, precision="float32"):
    """Writes ``out/name/version/``, the layout TF Serving loads.

    Signatures:
        ``serving_default``: ``images`` uint8 ``[B, h, w, 3]`` (any size, one
            size per batch).
    Images are resized as ``keras_gfocal.data.input_resize.input_resize(model,
    image_size)`` says: into the model's canvas, or, for a model without one
    (converted from a reference checkpoint), by the reference's test resize,
    which follows each image's orientation as ``gfocal evaluate`` does.
        ``detect_bytes``: ``image_bytes`` string ``[B]`` of encoded JPEG / PNG /
            GIF / BMP (what TF Serving's REST API sends as ``{"b64": ...}``).
    Both return the ``keras_gfocal.postprocess.DETECTION_KEYS``, as ``predict()``
    does: ``boxes [B, D, 4]`` xyxy in each input image's pixels, ``scores
    [B, D]``, ``labels [B, D]`` (contiguous class index, -1 on padding),
    ``category_ids [B, D]`` (the dataset's category ids, -1 on padding),
    ``num_detections [B]`` and ``edge_confidence [B, D, 4]``; and
    ``classes``, a deprecated alias of ``category_ids`` (its name in 0.1),
    to be removed in the next release.

    ``precision`` (``keras_gfocal.constants.PRECISIONS``): what the network
    computes in, ``"float32"``, ``"bfloat16"`` or ``"float16"``
    (``keras_gfocal.precision.with_precision``: float32 weights, the
    convolutions in the lower precision; the joint score, decoding and NMS in
    float32, and the outputs float32 whatever the precision). The metadata
    records it as ``"precision"``.

    Returns:
        the version folder.
    """
    resize = input_resize(model, image_size)
    # Folded first: the form of a mixed-precision model would be rebuilt under the global policy.
    model = with_precision(model.inference_form(), precision)
    path = os.path.join(out, name, str(int(version)))
    module = _Serving(model, resize)
    signatures = {
        "serving_default": module.serve_images.get_concrete_function(),
        "detect_bytes": module.serve_bytes.get_concrete_function(),
    }
    tf.saved_model.save(module, path, signatures=signatures)
    write_metadata(path, build_metadata(model, resize, "saved_model", signatures=sorted(signatures)))
    return path
