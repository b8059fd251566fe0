"""What every benchmark prints first: the date and the machine it ran on."""

import os
import platform
import time


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process: the default on x86, off with
    ``TF_ENABLE_ONEDNN_OPTS=0`` (read once, when TensorFlow is loaded)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def machine_line():
    """``2026-11-27 | Intel(R) Xeon(R) Processor | 2 cores | TF 2.21.0 (oneDNN on) | Keras 3.15.1``."""
    import keras
    import tensorflow as tf

    return (
        f"{time.strftime('%Y-%m-%d')} | {cpu_name()} | {os.cpu_count()} cores | "
        f"TF {tf.__version__} (oneDNN {'on' if onednn_enabled() else 'off'}) | Keras {keras.__version__}"
    )


def random_targets(rng, batch, size, num_classes, largest=None):
    """Training targets for random images: five boxes per image (the rest padding, label -1),
    each side up to ``largest`` pixels (default a quarter of the canvas's shorter side) and at
    least a tenth of that.

    Returns ``{"boxes": [batch, 100, 4] xyxy float32, "labels": [batch, 100] int32}``.
    """
    import numpy as np

    boxes = np.zeros((batch, 100, 4), "float32")
    labels = -np.ones((batch, 100), "int32")
    height, width = size
    side = largest or min(height, width) // 4
    for i in range(batch):
        for j in range(5):
            x1, y1 = rng.uniform(0, width - side), rng.uniform(0, height - side)
            boxes[i, j] = [x1, y1, x1 + rng.uniform(side / 10, side), y1 + rng.uniform(side / 10, side)]
            labels[i, j] = rng.integers(0, num_classes)
    return {"boxes": boxes, "labels": labels}
