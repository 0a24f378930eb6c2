"""The batch path for policies in the ImageDataGenerator vocabulary (KerasAffine, KerasChannelShift, horizontal
and vertical flips: idg_classic, rotate-by-idg, shift, zoom, shear, ...). albumentations' Compose costs more per
call than these small transforms themselves; here a whole batch goes through each transform in the policy's
order: flips as one slice assignment on the chosen images, the warps and shifts per image with the transform's
own apply() (so the fill modes and rounding are exactly the per-image path's). The distributions are the
per-image path's; the random stream is another one (still a function of the batch's rng only)."""
from __future__ import annotations

import albumentations as A
import numpy as np

from ablation.augment import KerasAffine, KerasChannelShift

_FLIP_AXES = {A.HorizontalFlip: 2, A.VerticalFlip: 1}


class BatchPath:
    def __init__(self, transforms: list):
        self.transforms = transforms

    @classmethod
    def of(cls, compose: A.Compose) -> BatchPath | None:
        """The batch path for this Compose, or None when it holds anything else (or applies with p < 1)."""
        if compose.p != 1.0:
            return None
        transforms = list(compose.transforms)
        if not transforms or any(type(t) not in (KerasAffine, KerasChannelShift, *_FLIP_AXES) for t in transforms):
            return None
        return cls(transforms)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = images.copy()
        n, height, width = images.shape[:3]
        for t in self.transforms:
            chosen = np.flatnonzero(rng.random(n) < t.p)
            if type(t) in _FLIP_AXES:
                out[chosen] = np.flip(out[chosen], axis=_FLIP_AXES[type(t)])
            elif isinstance(t, KerasAffine):
                if t.is_identity:
                    continue
                for i in chosen:
                    out[i] = t.apply(out[i], t.sample_matrix(rng, height, width)).reshape(out.shape[1:])
            else:  # KerasChannelShift
                for i in chosen:
                    out[i] = t.apply(out[i], t.sample_intensity(rng))
        return out
