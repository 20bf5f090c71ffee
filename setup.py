#!/usr/bin/env python
"""seg_project: a Detectron2 project for cell instance segmentation (Mask R-CNN)."""

from setuptools import find_packages, setup

setup(
    name="seg_project",
    version="0.1.0",
    description="Detectron2 project for instance segmentation of cells in colored images",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=("seg_project", "seg_project.*")),
    python_requires=">=3.9",
    # Detectron2 itself is not on PyPI under its own name: tools/install_detectron2.py
    # installs it (or keeps a user's own build), so it is not listed here. torch and
    # torchvision are pinned by the Makefile (the same pins give CUDA builds on CUDA machines).
    install_requires=[
        "torch>=1.10",
        "torchvision>=0.11",
        "numpy>=1.22",
        "scipy>=1.8",
        "scikit-image>=0.19",
        "opencv-python-headless>=4.5",
        "pycocotools>=2.0.6",
        "faster-coco-eval>=1.6,<2",
        "tifffile>=2022.5",
        "imagecodecs>=2022.2",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "tensorboard>=2.8",
        "Pillow>=9.1",
        "PyYAML>=5.4",
        "tabulate>=0.8",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.5"],
    },
)
