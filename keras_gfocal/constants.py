"""Fixed values that modules on several floors share, in plain Python.

Nothing here imports TensorFlow or Keras, so the ``gfocal`` command's parser
(its ``--help``, its choices and defaults) reads them without starting either.
The modules that use them re-export them where they always lived:
``data.transforms`` the reference's sizes, ``export`` the formats and
``export.tflite`` the quantisations.
"""

#: The reference's training canvas ``(H, W)`` (MMDetection's ``Resize(img_scale=(1333, 800))``):
#: the default of training, of the data pipeline, and of exporting or analysing
#: a model that records no canvas of its own.
REFERENCE_IMAGE_SIZE = (800, 1333)

#: The reference's test-time scale limits: (short side, long side). The same
#: numbers as ``REFERENCE_IMAGE_SIZE``, another rule: limits that follow each
#: image's orientation, not a fixed canvas.
REFERENCE_TEST_SCALE = (800, 1333)

#: What ``export_model`` (and ``gfocal export --format``) writes.
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")

#: The TFLite export's ``quantize`` values; None keeps float32.
TFLITE_QUANTIZATIONS = (None, "float16", "dynamic", "int8")

#: The SavedModel export's compute precisions (``keras_gfocal.precision.with_precision``):
#: float32, or the lower one the convolutions run in (the joint score, decoding and NMS stay float32).
PRECISIONS = ("float32", "bfloat16", "float16")
