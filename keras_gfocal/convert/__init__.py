"""Converters of whole detectors: a reference GFocal checkpoint in, a ``GFocalDetector`` out.

A floor above the model: ``mmdet.py`` maps MMDetection's names onto the detector's parts
(importing each class it reads), ``checkpoint.py`` builds the preset and loads a ``.pth``
file into it. The backbones' own weights are converted one floor below the model, in
``keras_gfocal.pretrained``, so that ``GFocalDetector.from_preset`` can load them.
"""

from keras_gfocal.convert.checkpoint import convert_checkpoint

__all__ = ["convert_checkpoint"]
