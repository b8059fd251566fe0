"""Pictures: detections drawn on images, and image grids.

Drawing uses Pillow (a core dependency); plots that need matplotlib import it
lazily, so the package works without it.
"""

import colorsys

import numpy as np
from PIL import Image, ImageDraw


def class_color(label):
    """A distinct, stable RGB color per class index."""
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image, boxes, scores, labels, class_names=None, score_threshold=0.3, line_width=2):
    """Draws boxes with class name and score on a copy of ``image``.

    Args:
        image: ``[H, W, 3]`` uint8 RGB array or a PIL image.
        boxes: ``[N, 4]`` xyxy pixels of ``image``.
        scores: ``[N]``; labels: ``[N]`` contiguous class indices (-1: not drawn).
        class_names: optional list indexed by label.
        score_threshold: detections below it are not drawn.
    Returns:
        a PIL image.
    """
    canvas = (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))).copy()
    canvas = canvas.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    order = np.argsort(-np.asarray(scores))
    for i in order:
        score, label = float(scores[i]), int(labels[i])
        if score < score_threshold or label < 0:
            continue
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        color = class_color(label)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=line_width)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        tx, ty = x1, max(0.0, y1 - 11)
        text_box = draw.textbbox((tx, ty), text)
        draw.rectangle(text_box, fill=color)
        draw.text((tx, ty), text, fill=(0, 0, 0))
    return canvas


def image_grid(images, columns=4, pad=4, background=(255, 255, 255)):
    """Tiles PIL images (any sizes) into one picture, row by row."""
    if not images:
        raise ValueError("image_grid needs at least one image.")
    columns = min(columns, len(images))
    rows = (len(images) + columns - 1) // columns
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    grid = Image.new("RGB", (columns * (cell_w + pad) + pad, rows * (cell_h + pad) + pad), background)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        grid.paste(im, (pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    return grid
