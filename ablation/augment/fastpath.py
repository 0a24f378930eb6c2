"""The batch path for policies in the ImageDataGenerator vocabulary (KerasAffine, KerasChannelShift, horizontal
and vertical flips: idg_classic, shift, zoom, shear, hflip, ...). albumentations' Compose costs more per call
than these small transforms themselves; here a whole batch goes through the policy at once:

- consecutive geometric transforms (the warp and the flips) are composed, per image, into one output->input
  map and applied as one warp straight into the output batch (a flip is an affine map: for bilinear sampling
  the composed warp reads the same source points as warp-then-flip, so the pixels agree up to rounding);
- a run of flips alone is done by slicing; channel shifts use the transform's own apply().

Each transform is drawn with its own probability, in the policy's order, as the per-image path does; the
distributions are the per-image path's, the random stream is another one (still a function of the batch's rng
only)."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from ablation.augment.buffers import empty_batch
from ablation.augment.checks import FILL_MODES
from ablation.augment.idg import KerasAffine, KerasChannelShift

_FLIPS = (A.HorizontalFlip, A.VerticalFlip)


def _flip_matrix(t, height: int, width: int) -> np.ndarray:
    if isinstance(t, A.HorizontalFlip):
        return np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]])
    return np.array([[1.0, 0, 0], [0, -1, height - 1], [0, 0, 1]])


class BatchPath:
    def __init__(self, steps: list):
        self.steps = steps  # ("geometric", [KerasAffine and flips]) or ("shift", KerasChannelShift)

    @classmethod
    def of(cls, compose: A.Compose) -> BatchPath | None:
        """The batch path for this Compose, or None when it holds anything else (or applies with p < 1)."""
        if compose.p != 1.0:
            return None
        transforms = list(compose.transforms)
        if not transforms or any(type(t) not in (KerasAffine, KerasChannelShift, *_FLIPS) for t in transforms):
            return None
        steps: list = []
        for t in transforms:
            if isinstance(t, KerasChannelShift):
                steps.append(("shift", t))
            elif isinstance(t, KerasAffine) and t.is_identity:
                continue
            elif steps and steps[-1][0] == "geometric" and not (
                    isinstance(t, KerasAffine) and any(isinstance(u, KerasAffine) for u in steps[-1][1])):
                steps[-1][1].append(t)  # one warp per image for the run (at most one KerasAffine: one fill mode)
            else:
                steps.append(("geometric", [t]))
        return cls(steps)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = images
        for kind, step in self.steps:
            if kind == "shift":
                out = out.copy() if out is images else out
                for i in np.flatnonzero(rng.random(len(out)) < step.p):
                    out[i] = step.apply(out[i], step.sample_intensity(rng))
            else:
                out = self._geometric(out, step, rng)
        return out.copy() if out is images else out

    @staticmethod
    def _geometric(images: np.ndarray, transforms: list, rng: np.random.Generator) -> np.ndarray:
        n, height, width, channels = images.shape
        # Per image: the composed output->input map (first transform leftmost) and whether anything applies.
        maps = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
        chosen_any = np.zeros(n, bool)
        for t in transforms:
            chosen = rng.random(n) < t.p
            if isinstance(t, KerasAffine):
                maps[chosen] = maps[chosen] @ t.sample_matrices(rng, int(chosen.sum()), height, width)
            else:
                maps[chosen] = maps[chosen] @ _flip_matrix(t, height, width)
            chosen_any |= chosen
        affine = next((t for t in transforms if isinstance(t, KerasAffine)), None)
        out = empty_batch(images.shape, images.dtype)
        for i in range(n):
            if not chosen_any[i]:
                out[i] = images[i]
            elif affine is None:  # flips only: exact, by slicing
                flip_y, flip_x = maps[i, 1, 1] < 0, maps[i, 0, 0] < 0
                out[i] = images[i, ::-1 if flip_y else 1, ::-1 if flip_x else 1]
            elif affine.fill_mode == "constant":  # the transform's own fill (cval only where the source is outside)
                out[i] = affine.apply(images[i], maps[i, :2]).reshape(out.shape[1:])
            else:
                dst = out[i, :, :, 0] if channels == 1 else out[i]
                cv2.warpAffine(images[i], maps[i, :2], (width, height), dst=dst,
                               flags=affine.interpolation | cv2.WARP_INVERSE_MAP,
                               borderMode=FILL_MODES[affine.fill_mode])
        return out
