"""The `digits` source: scikit-learn's bundled 8x8 handwritten digits, upscaled; nothing to download.

No Keras, no MLflow.
"""
from __future__ import annotations

import cv2
import numpy as np

from ablation.datasets.common import Splits, common_args, make_splits, three_way, to_channels


def load_digits(image_size: int = 32, channels: int = 1, train_size: int | None = 500, validation_split: float = 0.2,
                test_split: float = 0.2, split_seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 handwritten digits (values 0-16), scaled to 0-255 and upscaled smoothly."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)
    if image_size != images.shape[1]:
        # Cubic keeps strokes round when blowing 8 px up 4x; it overshoots a little, hence the clip.
        images = np.stack([cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_CUBIC) for im in images])
    x = to_channels(np.clip(np.rint(images), 0, 255).astype(np.uint8)[..., None], channels)
    y = bunch.target.astype(np.int64)
    train, val, test = three_way(y, validation_split, test_split, split_seed, blame="validation_split")
    return make_splits(x, y, [str(i) for i in range(10)], train, val, test, train_size, split_seed)


def check_digits(args):
    common_args(args, ("validation_split", "test_split"))
