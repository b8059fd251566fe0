"""keras-gfocal: the GFocalV2 dense object detector for Keras 3.

``GFocalDetector`` and ``PRESETS`` are imported on first use, not with the
package, so that ``import keras_gfocal.cli`` (``gfocal --help``) starts no
TensorFlow. The serialisable classes register with Keras when their modules
are imported: ``from keras_gfocal import GFocalDetector`` (or
``import keras_gfocal.detector``) before ``keras.saving.load_model``.
"""

__version__ = "0.1.0"

__all__ = ["GFocalDetector", "PRESETS", "__version__"]


def __getattr__(name):
    # Called only for names not yet in the module: each import happens once.
    if name == "GFocalDetector":
        from keras_gfocal.detector import GFocalDetector

        return GFocalDetector
    if name == "PRESETS":
        from keras_gfocal.presets import PRESETS

        return PRESETS
    raise AttributeError(f"module 'keras_gfocal' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
