"""Data loading for keras_gfocal: COCO files, transforms, TFRecords, synthetic data.

* ``CocoDataset``: a COCO annotation file bound to its images, validated.
* ``make_dataset`` (``pipeline.py``): the batched ``tf.data`` pipeline (training or
  evaluation, the latter always in the dataset's order; ``test_scale=``
  ``REFERENCE_TEST_SCALE`` for the reference's per-image test resize); an image
  that does not decode stops it with an error naming the file.
* ``preprocess_image``: the same preprocessing for one image at inference.
* ``decode_image``: encoded bytes -> uint8 RGB, as every reader here decodes them;
  ``read_image``: the same for a file, as NumPy (what ``gfocal predict`` reads);
  both defined in ``keras_gfocal.image``, with ``MEAN`` and ``STD``.
* ``write_tfrecords`` / ``read_tfrecords``: sharded TFRecord storage.
* ``make_synthetic_coco``: a tiny synthetic shapes dataset in COCO format.
"""

from keras_gfocal.data.coco import CocoDataset
from keras_gfocal.data.pipeline import make_dataset
from keras_gfocal.data.synthetic import make_synthetic_coco, synthetic_class_names
from keras_gfocal.data.tfrecord import read_tfrecords, write_tfrecords
from keras_gfocal.data.transforms import REFERENCE_TEST_SCALE, preprocess_image
from keras_gfocal.image import MEAN, STD, decode_image, read_image

__all__ = [
    "CocoDataset",
    "MEAN",
    "REFERENCE_TEST_SCALE",
    "decode_image",
    "STD",
    "make_dataset",
    "make_synthetic_coco",
    "read_image",
    "preprocess_image",
    "read_tfrecords",
    "synthetic_class_names",
    "write_tfrecords",
]
