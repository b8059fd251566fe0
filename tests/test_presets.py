"""Presets: each count in ``PRESETS`` is the reference detector's, and the Keras model built from
the preset has those parameters (less the official GFocalV2 head's background channel).

The counts of the ResNet-50/101 presets were taken in PyTorch from the detectors that
tests/fixtures/make_reference_fixtures.py builds (``build_gfl_detector``) with 80 classes; the
other presets' counts are checked by their converter tests.
"""

import numpy as np
import pytest

from keras_gfocal import GFocalDetector
from keras_gfocal.presets import PRESETS

#: The official V2 head's 81st classifier channel (256 x 3 x 3 weights and a bias), which a
#: converted model drops.
BACKGROUND_CHANNEL = 256 * 9 + 1


@pytest.mark.parametrize("name", ["gfocal_v2_r50_fpn", "gfocal_v1_r50_fpn", "gfocal_v2_r101_fpn"])
def test_the_keras_model_has_the_reference_parameter_count(name):
    model = GFocalDetector.from_preset(name, num_classes=80, backbone_weights=None)
    model.build((None, None, None, 3))
    counted = sum(
        int(np.prod(w.shape)) for w in model.weights if not w.path.endswith(("moving_mean", "moving_variance"))
    )
    background = BACKGROUND_CHANNEL if model.dgqp else 0
    assert counted + background == PRESETS[name]["parameters"]


def test_every_reference_preset_states_its_parameter_count():
    unstated = [name for name, preset in PRESETS.items() if "tiny" not in name and "parameters" not in preset]
    assert unstated == []
