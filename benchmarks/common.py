"""Helpers the benchmarks share: Markdown tables, number formatting, installed versions, and the synthetic
CIFAR-10-sized dataset. Light on purpose (numpy and the package's dataset names only): a benchmark that drives
the package through fresh processes imports no Keras backend itself."""
from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import numpy as np

from ablation.datasets import CIFAR10_CLASSES as _CIFAR10

CIFAR10_CLASSES = list(_CIFAR10)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def write_cifar_like(path: Path, n_train: int, n_eval: int, size: int = 32) -> None:
    """A stand-in for CIFAR-10 as an .npz (ablation/conf/dataset/npz.yaml): n_train training images and n_eval each for
    validation and test, size x size RGB uint8, 10 balanced classes. Noise rather than photos: what the input
    path costs (augmentation, batching, the copy to the device) does not depend on what the pixels show."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.permutation(np.arange(n) % len(CIFAR10_CLASSES))
    np.savez(path, class_names=np.array(CIFAR10_CLASSES), **arrays)
