"""Aligned batch buffers."""
from __future__ import annotations

import math
import os

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

# Batches are written into 64-byte aligned buffers: TensorFlow takes an aligned numpy array as a tensor without
# copying it (backend.fit_input's tf.numpy_function), an unaligned one is copied, which at 224 px is a tenth of
# what augmenting the batch costs.
BATCH_ALIGNMENT = 64


def empty_batch(shape: tuple, dtype=np.uint8) -> np.ndarray:
    """np.empty(shape, dtype) whose data starts on a BATCH_ALIGNMENT-byte boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    buffer = np.empty(size + BATCH_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % BATCH_ALIGNMENT
    return buffer[start:start + size].view(dtype).reshape(shape)

