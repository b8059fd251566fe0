"""keras-gfocal: the GFocalV2 dense object detector for Keras 3."""

__version__ = "0.1.0"

from keras_gfocal.detector import GFocalDetector  # noqa: E402
from keras_gfocal.presets import PRESETS  # noqa: E402

__all__ = ["GFocalDetector", "PRESETS", "__version__"]
