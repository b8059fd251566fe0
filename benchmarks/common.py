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


def machine_line():
    """``2026-11-27 | Intel(R) Xeon(R) Processor | 2 cores | TF 2.21.0 | Keras 3.15.1``."""
    import keras
    import tensorflow as tf

    return (
        f"{time.strftime('%Y-%m-%d')} | {cpu_name()} | {os.cpu_count()} cores | "
        f"TF {tf.__version__} | Keras {keras.__version__}"
    )
