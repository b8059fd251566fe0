"""keras-gfocal: the GFocalV2 dense object detector for Keras 3."""

__version__ = "0.1.0"

from keras_gfocal.detector import GFocalDetector
from keras_gfocal.presets import PRESETS

__all__ = ["GFocalDetector", "PRESETS", "__version__"]
