"""Packaging for keras-gfocal."""

from setuptools import find_packages, setup

setup(
    name="keras-gfocal",
    version="0.1.0",
    description="GFocalV2 (Generalized Focal Loss V2) dense object detector for Keras 3 / TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_gfocal", "keras_gfocal.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.10",
        "numpy>=1.26",
        "pycocotools>=2.0.8",
        "tqdm>=4.66",
        "pillow>=10",
        "tensorboard>=2.16",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "viz": ["matplotlib>=3.8", "ipywidgets>=8"],
        "export": ["tf2onnx>=1.16", "ai-edge-litert>=1.2"],
        "test": [
            # pytest 9.2's structured node ids break pytest-xdist's --dist loadgroup
            # (pytest-dev/pytest-xdist#1386): tests would be spread without their groups.
            "pytest>=8,<9.2",
            "pytest-xdist>=3.6",
            "ruff==0.17.6",
            "matplotlib>=3.8",
            "tf2onnx>=1.16",
            "ai-edge-litert>=1.2",
            "onnxruntime>=1.18",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "ipywidgets>=8",
        ],
    },
    entry_points={"console_scripts": ["gfocal=keras_gfocal.cli:main"]},
)
