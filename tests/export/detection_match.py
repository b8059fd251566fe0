"""The check every float export's detections get against the Keras model's."""

import numpy as np


def assert_close_detections(got, expected, atol_box=0.5, atol_score=2e-3):
    """The confident detections (score > 0.2) of two runs match one to one."""
    keep_g, keep_e = got["scores"] > 0.2, expected["scores"] > 0.2
    assert keep_e.sum() > 0
    assert keep_g.sum() == keep_e.sum()
    np.testing.assert_allclose(got["boxes"][keep_g], expected["boxes"][keep_e], atol=atol_box)
    np.testing.assert_allclose(got["scores"][keep_g], expected["scores"][keep_e], atol=atol_score)
    np.testing.assert_array_equal(got["category_ids"][keep_g], expected["category_ids"][keep_e])
