"""ImageDataGenerator semantics that no albumentations transform reproduces exactly (KerasAffine, KerasChannelShift)
and the affine matrices Keras builds, which the batch path (fastpath) applies to a whole batch at once."""
from __future__ import annotations

import os
from typing import Any

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np

from ablation.augment.checks import (
    FILL_MODES,
    check_fill_mode,
    check_number,
    check_probability,
    is_number,
    public_name,
    zoom_bounds,
)

# --------------------------------------------------------------------------------------------------------------
# ImageDataGenerator semantics that no albumentations transform reproduces exactly. Both sample in get_params*
# from the transform's own generators, so Compose seeding covers them.

class KerasAffine(A.DualTransform):
    """ImageDataGenerator's random rotation, shifts, shear and zoom as one bilinear warp, sampled and composed as
    keras' legacy `get_random_transform` / `apply_affine_transform` do (one interpolation, Keras' fill modes).

    rotation_range: degrees, uniform in (-r, r).  width/height_shift_range: float < 1 = fraction of the width/height,
    float >= 1 = pixels, int = whole pixels drawn from (-r, r).  shear_range: degrees (Keras' shear matrix, which
    also scales y by cos(shear)).  zoom_range: float z -> [1 - z, 1 + z] or [lower, upper], drawn separately for x
    and y; zoom > 1 shows a smaller image.  fill_mode: nearest|constant|reflect|wrap, cval for constant.

    Where this deliberately differs from keras' legacy code (3.x): Keras feeds height_shift_range into the
    horizontal axis and width_shift_range into the vertical one, and centres non-square images on the wrong axis;
    here each range moves the axis its name says and the centre is the image centre (identical for square images
    with equal ranges). Keras' 'wrap' uses scipy's 'wrap' mode, whose period is one pixel short; this uses the
    documented abcdabcd. Results are rounded to uint8 after the warp; Keras keeps floats.
    """

    @classmethod
    def get_class_fullname(cls) -> str:
        return public_name(cls)  # as policies name it, and as recorded fingerprints hold it

    def __init__(self, rotation_range: float = 0.0, width_shift_range: float = 0.0, height_shift_range: float = 0.0,
                 shear_range: float = 0.0, zoom_range: float | tuple[float, float] = 0.0, fill_mode: str = "nearest",
                 cval: float = 0.0, p: float = 1.0):
        super().__init__(p=check_probability("p", p))
        self.rotation_range = float(check_number("rotation_range", rotation_range, minimum=0))
        self.width_shift_range = check_number("width_shift_range", width_shift_range, minimum=0)
        self.height_shift_range = check_number("height_shift_range", height_shift_range, minimum=0)
        self.shear_range = float(check_number("shear_range", shear_range, minimum=0))
        self._zoom = zoom_bounds(zoom_range)
        self.zoom_range = zoom_range if is_number(zoom_range) else self._zoom
        self.fill_mode = check_fill_mode(fill_mode)
        self.cval = float(check_number("cval", cval))
        self.interpolation = cv2.INTER_LINEAR  # Keras' default interpolation_order=1

    @property
    def is_identity(self) -> bool:
        return not (self.rotation_range or self.width_shift_range or self.height_shift_range or self.shear_range
                    or self._zoom != (1.0, 1.0))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        return {"matrix": self.sample_matrix(self.random_generator, height, width)}

    def sample_matrices(self, g: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        """n random warps at once, (n, 3, 3): the distribution of sample_matrix, drawn array-wise."""
        def shifts(shift_range, size):
            if not shift_range:
                return np.zeros(n)
            if isinstance(shift_range, int):
                return (g.integers(0, shift_range, n) * g.choice((-1, 1), n)).astype(float)
            shift = g.uniform(-shift_range, shift_range, n)
            return shift * size if shift_range < 1 else shift

        theta = g.uniform(-self.rotation_range, self.rotation_range, n) if self.rotation_range else np.zeros(n)
        tx, ty = shifts(self.width_shift_range, width), shifts(self.height_shift_range, height)
        shear = g.uniform(-self.shear_range, self.shear_range, n) if self.shear_range else np.zeros(n)
        zx, zy = (np.ones(n), np.ones(n)) if self._zoom == (1.0, 1.0) else g.uniform(*self._zoom, (2, n))
        return keras_affine_matrices(theta, tx, ty, shear, zx, zy, height, width)

    def sample_matrix(self, g: np.random.Generator, height: int, width: int) -> np.ndarray:
        """One random warp (output -> input map) for an image of height x width, drawn from g."""
        theta = g.uniform(-self.rotation_range, self.rotation_range) if self.rotation_range else 0.0
        tx = _keras_shift(g, self.width_shift_range, width)
        ty = _keras_shift(g, self.height_shift_range, height)
        shear = g.uniform(-self.shear_range, self.shear_range) if self.shear_range else 0.0
        zx, zy = (1.0, 1.0) if self._zoom == (1.0, 1.0) else g.uniform(*self._zoom, 2)
        return keras_affine_matrix(theta, tx, ty, shear, zx, zy, height, width)

    def apply(self, img: np.ndarray, matrix: np.ndarray, interpolation: int = cv2.INTER_LINEAR,
              cval: float | None = None, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        cval = self.cval if cval is None else cval
        constant = self.fill_mode == "constant"
        # Keras (scipy's 'constant') gives cval to every pixel whose source lies outside the image and never blends
        # cval into the edge pixels, as OpenCV's BORDER_CONSTANT does; so: warp with the edge repeated, then fill.
        border = cv2.BORDER_REPLICATE if constant else FILL_MODES[self.fill_mode]
        out = cv2.warpAffine(img, matrix, (width, height), flags=interpolation | cv2.WARP_INVERSE_MAP,
                             borderMode=border).reshape(img.shape)
        if constant:
            y, x = np.mgrid[0:height, 0:width].astype(np.float32)
            src_x = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
            src_y = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
            eps = 1e-4
            outside = (src_x < -eps) | (src_x > width - 1 + eps) | (src_y < -eps) | (src_y > height - 1 + eps)
            out[outside] = np.rint(np.clip(cval, *_dtype_range(img.dtype)))
        return out

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        # The same warp without blending labels; with fill_mode=constant the area brought in from outside the
        # image is 0 in the mask (albumentations' fill_mask default), whatever cval the image gets.
        return self.apply(mask, matrix, interpolation=cv2.INTER_NEAREST, cval=0)


def _dtype_range(dtype) -> tuple[float, float]:
    return (np.iinfo(dtype).min, np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else (-np.inf, np.inf)


def _keras_shift(g: np.random.Generator, shift_range: float, size: int) -> float:
    if not shift_range:
        return 0.0
    if isinstance(shift_range, int):
        # Keras: np.random.choice(r) * np.random.choice([-1, 1]), whole pixels.
        return float(g.integers(0, shift_range) * g.choice((-1, 1)))
    shift = g.uniform(-shift_range, shift_range)
    return shift * size if shift_range < 1 else shift


def keras_affine_matrix(theta: float, tx: float, ty: float, shear: float, zx: float, zy: float,
                        height: int, width: int) -> np.ndarray:
    """Keras' output->input map R @ T @ Shear @ Zoom about the image centre, in (x, y) pixel coordinates (2x3)."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    zoom = np.diag([zx, zy, 1.0])
    ox, oy = width / 2 - 0.5, height / 2 - 0.5
    to_centre = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]])
    from_centre = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    return (to_centre @ rotation @ shift @ shearing @ zoom @ from_centre)[:2]


def keras_affine_matrices(theta, tx, ty, shear, zx, zy, height: int, width: int) -> np.ndarray:
    """keras_affine_matrix for arrays of parameters, (n, 3, 3), built array-wise (the batch path draws a whole
    batch's warps at once; the scalar version stays the per-image path's, where small arrays are cheaper)."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    n = len(t)
    one, zero = np.ones(n), np.zeros(n)

    def stack(rows):
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    rotation = stack([[np.cos(t), -np.sin(t), zero], [np.sin(t), np.cos(t), zero], [zero, zero, one]])
    shift = stack([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shearing = stack([[one, -np.sin(s), zero], [zero, np.cos(s), zero], [zero, zero, one]])
    zoom = stack([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    ox, oy = width / 2 - 0.5, height / 2 - 0.5
    to_centre = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]])
    from_centre = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    return to_centre @ rotation @ shift @ shearing @ zoom @ from_centre


class KerasChannelShift(A.ImageOnlyTransform):
    """ImageDataGenerator's channel_shift_range: one intensity uniform in (-r, r) added to every channel, then
    clipped to the image's own min and max (Keras' apply_channel_shift), rounded back to the image dtype."""

    @classmethod
    def get_class_fullname(cls) -> str:
        return public_name(cls)  # as policies name it, and as recorded fingerprints hold it

    def __init__(self, channel_shift_range: float = 0.0, p: float = 1.0):
        super().__init__(p=check_probability("p", p))
        self.channel_shift_range = check_number("channel_shift_range", channel_shift_range, minimum=0)

    def get_params(self) -> dict[str, Any]:
        return {"intensity": self.sample_intensity(self.random_generator)}

    def sample_intensity(self, g: np.random.Generator) -> float:
        r = self.channel_shift_range
        return g.uniform(-r, r) if r else 0.0

    def apply(self, img: np.ndarray, intensity: float, **params: Any) -> np.ndarray:
        low, high = img.min(), img.max()
        shifted = np.clip(img.astype(np.float32) + np.float32(intensity), low, high)
        return np.rint(shifted).astype(img.dtype) if img.dtype == np.uint8 else shifted.astype(img.dtype)


