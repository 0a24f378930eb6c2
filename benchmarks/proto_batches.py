"""Prototypes of faster training batches, to measure what a change to ablation/batches.py or ablation/augment.py
would buy before making it. Nothing in the package imports this file.

- OnePassBatches: Batches with the rescale done in one pass (np.multiply(..., dtype=float32)) instead of
  astype(float32) then * 1/255 (two passes over the batch and two float32 allocations).
- Uint8Batches (now ablation.batches.Batches itself): the augmented uint8 batch as is; the model rescales (keras.layers.Rescaling as
  its first layer), so the host never writes float32 and tf.data copies a 4x smaller tensor into the graph.
- BatchAffinePolicy: the ImageDataGenerator vocabulary (KerasAffine + flips) applied batch-wise: the warp
  matrices of the whole batch sampled and composed with numpy at once, cv2.warpAffine per image straight into
  the output array, the flips as one slice assignment; no albumentations Compose call per image. Same
  distributions as augment.KerasAffine / HorizontalFlip(p=0.5), not the same random stream.
"""
from __future__ import annotations


import cv2
import numpy as np

from ablation import augment
from ablation.batches import Batches

SCALE = np.float32(1 / 255)


class OnePassBatches(Batches):
    """The float32 batches the package once yielded, rescaled on the host in one pass (kept to measure the cost)."""

    def __getitem__(self, index: int):
        x, y = super().__getitem__(index)
        return np.multiply(x, SCALE, dtype=np.float32), y


# Batches itself now yields uint8 and leaves the rescale to the model's first layer.
Uint8Batches = Batches


class BatchAffinePolicy:
    """idg-vocabulary policies only (KerasAffine, HorizontalFlip, VerticalFlip); the prototype of a batch path."""

    def __init__(self, policy: augment.Policy):
        compose = policy._compose(augment.PLACEHOLDER_SIZE)
        self.name, self.is_identity = policy.name, policy.is_identity
        self.affine, self.flips = None, []
        for t in compose.transforms:
            if isinstance(t, augment.KerasAffine):
                self.affine = t
            elif type(t).__name__ in ("HorizontalFlip", "VerticalFlip"):
                self.flips.append((2 if type(t).__name__ == "HorizontalFlip" else 1, t.p))
            else:
                raise NotImplementedError(f"prototype handles KerasAffine and flips, not {type(t).__name__}")

    def matrices(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        a = self.affine
        theta = np.deg2rad(rng.uniform(-a.rotation_range, a.rotation_range, n))
        tx = rng.uniform(-a.width_shift_range, a.width_shift_range, n) * width   # fractions (< 1) only
        ty = rng.uniform(-a.height_shift_range, a.height_shift_range, n) * height
        shear = np.deg2rad(rng.uniform(-a.shear_range, a.shear_range, n))
        zx, zy = rng.uniform(*a._zoom, (2, n))
        cos, sin = np.cos(theta), np.sin(theta)
        # R @ T @ Shear @ Zoom, written out (the same product as augment.keras_affine_matrix), then centred.
        m = np.zeros((n, 2, 3))
        m[:, 0, 0] = cos * zx
        m[:, 0, 1] = (-cos * np.sin(shear) - sin * np.cos(shear)) * zy
        m[:, 1, 0] = sin * zx
        m[:, 1, 1] = (-sin * np.sin(shear) + cos * np.cos(shear)) * zy
        m[:, 0, 2] = cos * tx - sin * ty
        m[:, 1, 2] = sin * tx + cos * ty
        ox, oy = width / 2 - 0.5, height / 2 - 0.5
        m[:, 0, 2] += ox - m[:, 0, 0] * ox - m[:, 0, 1] * oy
        m[:, 1, 2] += oy - m[:, 1, 0] * ox - m[:, 1, 1] * oy
        return m

    def augment_batch(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, height, width, channels = images.shape
        out = np.empty_like(images)
        if self.affine is not None:
            border = augment.FILL_MODES[self.affine.fill_mode]
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            for i, m in enumerate(self.matrices(rng, n, height, width)):
                dst = out[i, :, :, 0] if channels == 1 else out[i]
                cv2.warpAffine(images[i], m, (width, height), dst=dst, flags=flags, borderMode=border)
        else:
            out[:] = images
        for axis, p in self.flips:
            chosen = rng.random(n) < p
            out[chosen] = np.flip(out[chosen], axis=axis)
        return out
