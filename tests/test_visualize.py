"""keras_gfocal.visualize: pixels drawn where the boxes are, threshold and padding rows, grids."""

import numpy as np
import pytest

from keras_gfocal.visualize import class_color, draw_detections, image_grid


def test_class_colors_are_stable_and_distinct():
    colors = [class_color(i) for i in range(8)]
    assert len(set(colors)) == 8
    assert class_color(3) == colors[3]
    assert all(0 <= v <= 255 for c in colors for v in c)


def test_draw_detections_outlines_each_kept_box_in_its_class_color():
    image = np.zeros((64, 80, 3), np.uint8)
    boxes = np.array([[10, 20, 50, 60], [2, 40, 7, 62], [60, 30, 75, 50]], np.float32)
    scores = np.array([0.9, 0.2, 0.8], np.float32)  # the second is under the threshold
    labels = np.array([1, 0, -1])  # the third is a padding row
    out = np.asarray(draw_detections(image, boxes, scores, labels, class_names=["a", "b"], line_width=1))
    assert out.shape == image.shape and not np.shares_memory(out, image) and image.max() == 0
    color = class_color(1)
    # the outline of box 0: its left and right edges and its bottom edge (the label covers the top)
    for y in (30, 45, 59):
        assert tuple(out[y, 10]) == color and tuple(out[y, 50]) == color, y
    assert tuple(out[60, 30]) == color
    assert out[40, 30].max() == 0  # inside the box: untouched
    assert out[40:64, 0:9].max() == 0  # the low-score box is not drawn
    assert out[30:51, 60:76].max() == 0  # nor the padding row
    # the label sits above the box in the class color (text in black on it)
    label = out[9:20, 10:40].reshape(-1, 3)
    assert (label == color).all(axis=1).sum() > 50 and (label == 0).all(axis=1).sum() > 5


def test_draw_detections_threshold_argument():
    image = np.zeros((32, 32, 3), np.uint8)
    out = np.asarray(
        draw_detections(image, np.array([[4, 12, 28, 28.0]]), [0.2], [0], score_threshold=0.1, line_width=1)
    )
    assert tuple(out[20, 4]) == class_color(0)


def test_image_grid_places_each_image_in_its_cell():
    from PIL import Image

    images = [Image.new("RGB", (10, 6), (i * 40, 0, 0)) for i in range(1, 4)]
    grid = image_grid(images, columns=2, pad=2)
    assert grid.size == (2 * 12 + 2, 2 * 8 + 2)
    g = np.asarray(grid)
    assert tuple(g[2, 2]) == (40, 0, 0) and tuple(g[2, 14]) == (80, 0, 0) and tuple(g[10, 2]) == (120, 0, 0)
    assert tuple(g[10, 14]) == (255, 255, 255)  # the empty fourth cell
    with pytest.raises(ValueError, match="at least one"):
        image_grid([])
