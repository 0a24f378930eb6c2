"""Augmentation policies: a config node (albumentations transforms, or Keras' ImageDataGenerator vocabulary)
-> a Policy that maps uint8 images to augmented uint8 images of the same shape, reproducibly from a passed-in
numpy Generator. Everything that can be wrong with a policy is found by build(cfg), before any image is read.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import json
import math
import os
import random
import re
import threading
import typing
from dataclasses import dataclass, field
from typing import Any

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.dropout.transforms import BaseDropout
from albumentations.core.composition import BaseCompose
from albumentations.core.transforms_interface import BasicTransform
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import ValidationError

from ablation import errors

ROOT_KEY = "augmentation"
# mode, copies, save_format, save_prefix: how the policy is applied (online per batch, or offline as a written
# training set, ablation/expand.py); checked by ablation.config, not part of the policy itself.
TOP_LEVEL_KEYS = ("name", "transforms", "idg", "mix", "variant", "where", "mode", "copies", "save_format",
                  "save_prefix")
PLACES = ("host", "device")
# ImageDataGenerator arguments that shape the fill of others rather than being an augmentation of their own.
IDG_SETTINGS = ("fill_mode", "cval")
# Transforms that blank pixels of the input in place (input corruption, not a move): see _kind.
DROPOUTS = (BaseDropout, A.PixelDropout)
IDG_KEYS = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
            "horizontal_flip", "vertical_flip", "brightness_range", "channel_shift_range", "fill_mode", "cval")
FILL_MODES = {"nearest": cv2.BORDER_REPLICATE,   # aaaaaaaa|abcd|dddddddd
              "constant": cv2.BORDER_CONSTANT,   # kkkkkkkk|abcd|kkkkkkkk
              "reflect": cv2.BORDER_REFLECT,     # abcddcba|abcd|dcbaabcd
              "wrap": cv2.BORDER_WRAP}           # abcdabcd|abcd|abcdabcd
# Nested containers a policy may use. Compose itself is the policy's own outer container.
NESTABLE = ("OneOf", "SomeOf", "Sequential", "RandomOrder", "OneOrOther")
# albumentations 2.0.8 transforms that raise on 1-channel images (they call non_rgb_error); a grayscale image
# goes through them as gray -> RGB -> gray so every policy works on grayscale datasets.
RGB_ONLY = frozenset({"RandomSnow", "RandomRain", "RandomFog", "RandomSunFlare", "ISONoise", "Spatter",
                      "ChromaticAberration", "PlanckianJitter", "HEStain"})
# Stands in for the image size while validating a policy before any image is seen.
PLACEHOLDER_SIZE = (64, 64)
# Where a policy's `_target_` may point: albumentations' transforms and this module's Keras-compatible ones.
# Nothing else can be named, so a policy file cannot reach other code (os.system, keras.layers.Lambda, ...).
TARGET_PREFIXES = ("albumentations.", "ablation.augment.")
# albumentations classes that pass the subclass test but are no augmentation: bases, and Lambda, which runs
# Python functions a YAML file cannot hold.
NOT_TRANSFORMS = {"BasicTransform": "a base class, not a transform", "DualTransform": "a base class, not a transform",
                  "ImageOnlyTransform": "a base class, not a transform", "Transform3D": "a base class, not a transform",
                  "Lambda": "it runs Python functions, which a policy file cannot hold; write the transform as a "
                            "class in ablation.augment"}
# Arguments given as [low, high] that albumentations accepts reversed (and then samples from silently) or that it
# checks itself: low <= high is required of all of them. Names follow albumentations' own (`*_range`, `*_limit`).
INTERVAL_ARGS = ("limit", "scale", "ratio", "rotate", "translate_percent", "translate_px", "shear")
# Arguments albumentations accepts at any sign although only positive values mean anything (a zero scale
# collapses the image to a point, a negative one mirrors it).
POSITIVE_ARGS = {"Affine": ("scale",)}


PolicyError = errors.PolicyError  # raised throughout this module; defined with the other user errors


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


# --------------------------------------------------------------------------------------------------------------
# Value checks shared by the config parser and the Keras-compatible transforms below. They raise ValueError
# "<arg>: ..." so the parser can prefix the config path.

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(key: str, value, minimum: float | None = None):
    if not _is_number(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ValueError(f"{key}: expected a number{bound}, got {value!r}")
    return value


def _check_probability(key: str, value) -> float:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{key}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _check_pair(key: str, value, what: str, valid) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(_is_number, value))
            or not valid(*value)):
        raise ValueError(f"{key}: expected {what}, got {_plain(value)!r}")
    return float(value[0]), float(value[1])


def _zoom_bounds(value) -> tuple[float, float]:
    # Keras: a float z means [1 - z, 1 + z]; a pair is taken as is.
    if _is_number(value):
        if not 0 <= value < 1:
            raise ValueError(f"zoom_range: expected a number in [0, 1) or a pair [lower, upper] with "
                             f"0 < lower <= upper, got {value!r}")
        return 1.0 - value, 1.0 + value
    return _check_pair("zoom_range", value, "a number in [0, 1) or a pair [lower, upper] with 0 < lower <= upper",
                       lambda lo, hi: 0 < lo <= hi)


def _check_fill_mode(value) -> str:
    if value not in FILL_MODES:
        raise ValueError(f"fill_mode: expected one of {'|'.join(FILL_MODES)}, got {value!r}")
    return value


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

    def __init__(self, rotation_range: float = 0.0, width_shift_range: float = 0.0, height_shift_range: float = 0.0,
                 shear_range: float = 0.0, zoom_range: float | tuple[float, float] = 0.0, fill_mode: str = "nearest",
                 cval: float = 0.0, p: float = 1.0):
        super().__init__(p=_check_probability("p", p))
        self.rotation_range = float(_check_number("rotation_range", rotation_range, minimum=0))
        self.width_shift_range = _check_number("width_shift_range", width_shift_range, minimum=0)
        self.height_shift_range = _check_number("height_shift_range", height_shift_range, minimum=0)
        self.shear_range = float(_check_number("shear_range", shear_range, minimum=0))
        self._zoom = _zoom_bounds(zoom_range)
        self.zoom_range = zoom_range if _is_number(zoom_range) else self._zoom
        self.fill_mode = _check_fill_mode(fill_mode)
        self.cval = float(_check_number("cval", cval))
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

    def __init__(self, channel_shift_range: float = 0.0, p: float = 1.0):
        super().__init__(p=_check_probability("p", p))
        self.channel_shift_range = _check_number("channel_shift_range", channel_shift_range, minimum=0)

    def get_params(self) -> dict[str, Any]:
        return {"intensity": self.sample_intensity(self.random_generator)}

    def sample_intensity(self, g: np.random.Generator) -> float:
        r = self.channel_shift_range
        return g.uniform(-r, r) if r else 0.0

    def apply(self, img: np.ndarray, intensity: float, **params: Any) -> np.ndarray:
        low, high = img.min(), img.max()
        shifted = np.clip(img.astype(np.float32) + np.float32(intensity), low, high)
        return np.rint(shifted).astype(img.dtype) if img.dtype == np.uint8 else shifted.astype(img.dtype)


# cv2 interpolation flags RandAugment's warps accept (Keras' RandAugment has nearest and bilinear only).
RANDAUGMENT_INTERPOLATIONS = {cv2.INTER_NEAREST: "nearest", cv2.INTER_LINEAR: "linear", cv2.INTER_CUBIC: "cubic",
                              cv2.INTER_LANCZOS4: "lanczos4"}
# ITU-R 601 luma as keras.ops.image.rgb_to_grayscale weighs it (RandomColorDegeneration's grey).
KERAS_GREY = np.array([0.2989, 0.5870, 0.1140], np.float32)
# PIL's ImageFilter.SMOOTH kernel, RandomSharpness' blurred image.
SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13


def _randaugment_factor(value) -> tuple[float, float]:
    # Keras' RandAugment._set_factor: a number f -> (0, f); a pair is taken as is.
    what = "a number in [0, 1] or a pair [low, high] with 0 <= low <= high <= 1"
    if _is_number(value):
        if not 0 <= value <= 1:
            raise ValueError(f"factor: expected {what}, got {value!r}")
        return 0.0, float(value)
    return _check_pair("factor", value, what, lambda lo, hi: 0 <= lo <= hi <= 1)


class RandAugment(A.ImageOnlyTransform):
    """Keras 3's keras.layers.RandAugment on the host: per image, `num_ops` operations drawn uniformly with
    replacement from the 11 below and applied one after the other, each with a magnitude drawn from the range
    Keras derives from `factor`. Keras draws which operations apply once per batch (every image of a batch gets
    the same ones); this draws them per image, as RandAugment is defined (Cubuk et al., 2019), and so does the
    device side (ablation.device.RandAugment, `augmentation.where=device`).

    factor: a number f in [0, 1] means [lo, hi] = [0, f] (Keras' _set_factor); a pair [lo, hi] is taken as is.
    num_ops: operations per image (0: none).  interpolation: cv2 flag of the three warps, 0 nearest, 1 linear
    (Keras' bilinear), 2 cubic, 4 lanczos4.  Warps fill by reflection (dcba|abcd), Keras' default.

    The operations, in Keras' order, with their magnitudes (u(a, b): uniform per image; values in 0-255):
      random_shear: output (x, y) reads the input at (x + sx * y, sy * x + y), about the top-left corner, with
          sx, sy each u(lo, hi) and one sign, + or - with probability 1/2, for both.
      random_translation: the image moves right by u(lo, hi) * width and down by u(lo, hi) * height.
      random_rotation: by u(lo * 360, hi * 360) degrees about the centre, counter-clockwise as displayed.
      random_brightness: + u(lo, hi) * 255, clipped.
      random_color_degeneration: blends towards the grey image (0.2989 R + 0.5870 G + 0.1140 B) by u(lo, hi);
          a 1-channel image is its own grey.
      random_contrast: (x - mean) * c + mean per channel, c = u(1 - lo, 1 + hi), clipped.
      random_sharpness: x + (1 - 2 s) * (smooth - x), s = u(lo, hi), smooth = x filtered with PIL's SMOOTH
          kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 over zero padding; 2 s < 1 blurs, > 1 sharpens.
      random_posterization: keeps the b highest bits, b an integer uniform in [1, P - 1] with
          P = max(1, int(8 * hi)), or b = 1 when P is 1 (a larger factor keeps more bits).
      solarization: v = clip(x + a, 0, 255), then 255 - v where v >= t, a and t each u(lo, 255 * hi) (Keras
          scales only the upper bound).
      auto_contrast: each channel stretched so its minimum becomes 0 and its maximum 255 (constant: unchanged).
      equalization: each channel's histogram equalised (cv2.equalizeHist, the lookup table Keras builds);
          Keras counts the histogram over the whole batch, this over the image.
    With the default factor 0.5: shear up to 0.5, translation up to half the image, rotation up to 180 degrees,
    brightness up to +127, contrast 1 to 1.5, sharpness blurring only, 1 to 3 bits, solarization threshold and
    addition up to 127.

    Each operation is rounded back to uint8; Keras keeps floats in between. Its operations both move pixels and
    change their values, so an image-to-image task cannot split it into spatial and photometric parts
    (Policy.split refuses it).
    """

    OPS = ("random_shear", "random_translation", "random_rotation", "random_brightness",
           "random_color_degeneration", "random_contrast", "random_sharpness", "random_posterization",
           "solarization", "auto_contrast", "equalization")

    def __init__(self, num_ops: int = 2, factor: float | tuple[float, float] = 0.5,
                 interpolation: int = cv2.INTER_LINEAR, p: float = 1.0):
        super().__init__(p=_check_probability("p", p))
        if not isinstance(num_ops, int) or isinstance(num_ops, bool) or num_ops < 0:
            raise ValueError(f"num_ops: expected how many operations per image, an integer >= 0, got {num_ops!r}")
        self.num_ops = num_ops
        self._factor = _randaugment_factor(factor)
        self.factor = float(factor) if _is_number(factor) else list(self._factor)
        if isinstance(interpolation, bool) or interpolation not in RANDAUGMENT_INTERPOLATIONS:
            choices = ", ".join(f"{k} ({v})" for k, v in RANDAUGMENT_INTERPOLATIONS.items())
            raise ValueError(f"interpolation: expected a cv2 flag, one of {choices}, got {interpolation!r}")
        self.interpolation = int(interpolation)

    def get_params(self) -> dict[str, Any]:
        return {"ops": self.sample_ops(self.random_generator)}

    def sample_ops(self, g: np.random.Generator) -> list[tuple[str, dict[str, float]]]:
        """One image's operations and their magnitudes, drawn from g: [(name, arguments of apply_op), ...]."""
        return [(self.OPS[i], self._sample(self.OPS[i], g)) for i in g.integers(0, len(self.OPS), self.num_ops)]

    def _sample(self, name: str, g: np.random.Generator) -> dict[str, float]:
        lo, hi = self._factor
        if name == "random_shear":
            sign = -1.0 if g.random() > 0.5 else 1.0
            return {"shear_x": sign * g.uniform(lo, hi), "shear_y": sign * g.uniform(lo, hi)}
        if name == "random_translation":
            return {"x": g.uniform(lo, hi), "y": g.uniform(lo, hi)}
        if name == "random_rotation":
            return {"angle": g.uniform(lo * 360, hi * 360)}
        if name == "random_brightness":
            return {"delta": g.uniform(lo, hi) * 255}
        if name == "random_contrast":
            return {"factor": g.uniform(1 - lo, 1 + hi)}
        if name in ("random_color_degeneration", "random_sharpness"):
            return {"factor": g.uniform(lo, hi)}
        if name == "random_posterization":
            top = max(1, int(8 * hi))
            return {"bits": int(g.integers(1, top)) if top > 1 else 1}
        if name == "solarization":
            return {"addition": g.uniform(lo, hi * 255), "threshold": g.uniform(lo, hi * 255)}
        return {}  # auto_contrast, equalization: no magnitude

    def apply(self, img: np.ndarray, ops: list[tuple[str, dict[str, float]]] = (), **params: Any) -> np.ndarray:
        for name, args in ops:
            img = self.apply_op(img, name, **args)
        return img

    def apply_op(self, img: np.ndarray, name: str, **args: float) -> np.ndarray:
        """One operation with given magnitudes (sample_ops' arguments) on a uint8 HxWxC image, C = 1 or 3."""
        if name not in self.OPS:
            raise ValueError(f"op: expected one of {', '.join(self.OPS)}, got {name!r}")
        return getattr(self, f"_{name}")(img, **args).reshape(img.shape)

    # ---- the operations; output -> input maps in (x, y) pixel coordinates, as Keras' affine_transform reads them.

    def _warp(self, img: np.ndarray, matrix) -> np.ndarray:
        height, width = img.shape[:2]
        return cv2.warpAffine(img, np.asarray(matrix, np.float64), (width, height),
                              flags=self.interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

    def _random_shear(self, img, shear_x: float, shear_y: float):
        return self._warp(img, [[1, shear_x, 0], [shear_y, 1, 0]])

    def _random_translation(self, img, x: float, y: float):
        height, width = img.shape[:2]
        return self._warp(img, [[1, 0, -x * width], [0, 1, -y * height]])

    def _random_rotation(self, img, angle: float):
        height, width = img.shape[:2]
        t = math.radians(angle)
        cos, sin = math.cos(t), math.sin(t)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        return self._warp(img, [[cos, -sin, cx - cx * cos + cy * sin], [sin, cos, cy - cx * sin - cy * cos]])

    @staticmethod
    def _to_uint8(values: np.ndarray) -> np.ndarray:
        return np.rint(np.clip(values, 0, 255)).astype(np.uint8)

    def _random_brightness(self, img, delta: float):
        return self._to_uint8(img.astype(np.float32) + np.float32(delta))

    def _random_color_degeneration(self, img, factor: float):
        if img.shape[-1] != 3:
            return img
        x = img.astype(np.float32)
        grey = (x @ KERAS_GREY)[..., None]
        return self._to_uint8(x + np.float32(factor) * (grey - x))

    def _random_contrast(self, img, factor: float):
        x = img.astype(np.float32)
        mean = x.mean(axis=(0, 1), keepdims=True)
        return self._to_uint8((x - mean) * np.float32(factor) + mean)

    def _random_sharpness(self, img, factor: float):
        x = img.astype(np.float32)
        smooth = cv2.filter2D(x, -1, SMOOTH_KERNEL, borderType=cv2.BORDER_CONSTANT).reshape(x.shape)
        return self._to_uint8(x + np.float32(1 - 2 * factor) * (smooth - x))

    def _random_posterization(self, img, bits: int):
        shift = 8 - int(bits)
        return (img >> shift) << shift

    def _solarization(self, img, addition: float, threshold: float):
        v = np.clip(img.astype(np.float32) + np.float32(addition), 0, 255)
        return self._to_uint8(np.where(v < threshold, v, 255 - v))

    def _auto_contrast(self, img):
        x = img.astype(np.float32)
        low, high = x.min(axis=(0, 1), keepdims=True), x.max(axis=(0, 1), keepdims=True)
        spread = high - low
        stretched = (x - low) * (255 / np.where(spread > 0, spread, 1))
        return self._to_uint8(np.where(spread > 0, stretched, x))

    def _equalization(self, img):
        return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(img.shape[-1])],
                        axis=-1)


# --------------------------------------------------------------------------------------------------------------
# Parsing: config -> a tree of _Node (class + arguments), checked in full without image data.

@dataclass
class _Node:
    cls: type
    args: dict[str, Any]
    path: str                     # config key for error messages
    label: str                    # the `_target_` as the user wrote it
    children: list[_Node] | None = None
    auto_size: bool = False       # `size` left out: filled with the image's (height, width) at call time
    arg_paths: dict[str, str] = field(default_factory=dict)  # argument -> config key, where it differs

    def walk(self):
        yield self
        for child in self.children or ():
            yield from child.walk()


def _plain(value):
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _fail(key: str, message: str) -> PolicyError:
    return PolicyError(f"{key}: {message}")


def _checked(path: str, check, *args):
    """Run one of the value checks above; its "<arg>: ..." message becomes "<path>.<arg>: ..."."""
    try:
        return check(*args)
    except ValueError as e:
        raise PolicyError(f"{path}.{e}") from None


def _parse_transforms(items, path: str) -> list[_Node]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise _fail(path, f"expected a list of transforms, got {items!r}")
    return [_parse_transform(item, f"{path}[{i}]") for i, item in enumerate(items)]


def _resolve_target(target, path: str) -> type:
    key = f"{path}._target_"
    if not isinstance(target, str) or not target:
        raise _fail(key, f"expected a class name such as 'albumentations.HorizontalFlip', got {target!r}")
    if target.startswith("keras."):
        raise _fail(key, f"{target!r}: policies name albumentations transforms, not Keras layers; "
                         f"{ROOT_KEY}.where=device runs the albumentations policy as Keras layers")
    if not target.startswith(TARGET_PREFIXES):
        raise _fail(key, f"expected a transform from {' or '.join(TARGET_PREFIXES)}, got {target!r} "
                         f"(a policy cannot name other code)")
    module_name, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        hint = difflib.get_close_matches(attr, dir(A), n=1) if module_name == "albumentations" else []
        raise _fail(key, f"{target!r} does not exist" + (f" (did you mean 'albumentations.{hint[0]}'?)" if hint
                                                          else "")) from None
    if not (inspect.isclass(cls) and issubclass(cls, (BasicTransform, BaseCompose))):
        raise _fail(key, f"{target!r} is not an albumentations transform")
    if cls.__name__ in NOT_TRANSFORMS and cls.__module__.startswith("albumentations."):
        raise _fail(key, f"{target!r} cannot be used: {NOT_TRANSFORMS[cls.__name__]}")
    if target.startswith("ablation.") and cls.__module__ != __name__:
        raise _fail(key, f"{target!r} is not a transform defined in {__name__}")
    if issubclass(cls, BaseCompose) and cls.__name__ not in NESTABLE:
        raise _fail(key, f"{target!r} cannot be nested; use one of {', '.join(NESTABLE)} (the policy itself is "
                         f"the Compose)")
    return cls


def _parse_transform(item, path: str) -> _Node:
    if not isinstance(item, dict):
        raise _fail(path, f"expected a mapping with a _target_, got {item!r}")
    if "_target_" not in item:
        raise _fail(f"{path}._target_", "missing (e.g. _target_: albumentations.HorizontalFlip)")
    label = item["_target_"]
    cls = _resolve_target(label, path)
    args = {k: v for k, v in item.items() if k != "_target_"}
    if "p" in args:
        _checked(path, _check_probability, "p", args["p"])

    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for name in args:
            if name not in params or name in ("strict", "seed"):
                close = difflib.get_close_matches(name, [p for p in params if p != "strict"], n=1)
                raise _fail(path, f"{label}: unexpected argument {name!r}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))

    for name, value in args.items():
        if name != "transforms":
            _check_argument(cls, label, f"{path}.{name}", name, value)
    if cls.__name__ == "CoarseDropout":
        _check_hole_units(cls, label, path, args)

    children = None
    if issubclass(cls, BaseCompose):
        if not args.get("transforms"):
            raise _fail(f"{path}.transforms", f"{label} needs a non-empty list of transforms")
        children = _parse_transforms(args.pop("transforms"), f"{path}.transforms")
        if cls.__name__ == "OneOf" and not sum(_probability_of(child) for child in children):
            # albumentations would divide by the sum of the weights (ZeroDivisionError).
            raise _fail(f"{path}.transforms", f"{label}: every transform has p: 0, so none can be chosen; give one "
                                              f"a p above 0 or remove the {cls.__name__}")
        n = args.get("n", 1)
        if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n):
            raise _fail(f"{path}.n", f"expected how many transforms to apply, an integer >= 1, got {n!r}")

    auto_size = False
    for name, param in params.items():
        required = param.default is param.empty and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        if required and name not in args and name != "transforms":
            if name == "size":
                auto_size = True  # e.g. RandomResizedCrop: output the input's size
            else:
                raise _fail(path, f"{label}: missing required argument {name!r}")
    return _Node(cls, args, path, label, children, auto_size)


def _check_argument(cls: type, label: str, key: str, name: str, value) -> None:
    """What albumentations' own validation lets through: true/false or a quoted number where a number belongs
    (pydantic reads true as 1 and "0.5" as 0.5), reversed intervals, and signs that mean nothing."""
    for kind, what in ((bool, "true/false"), (str, "a string")):
        if _contains(value, kind) and not _takes(cls, name, kind):
            raise _fail(key, f"{label}: expected a number, not {what}, got {_plain(value)!r}")
    if name.endswith(("_range", "_limit")) or name in INTERVAL_ARGS:
        for pair in _pairs(value):
            if pair[0] > pair[1]:
                raise _fail(key, f"{label}: expected an interval [low, high] with low <= high, got {_plain(value)!r}")
    if name in POSITIVE_ARGS.get(cls.__name__, ()):
        numbers = [v for pair in _pairs(value) for v in pair] + ([value] if _is_number(value) else [])
        if isinstance(value, dict):
            numbers += [v for v in value.values() if _is_number(v)]
        if any(v <= 0 for v in numbers):
            raise _fail(key, f"{label}: expected values > 0, got {_plain(value)!r}")


def _check_hole_units(cls: type, label: str, path: str, args: dict) -> None:
    # albumentations 2.0 reads both hole ranges in pixels when hole_height_range's upper bound is >= 1 and as
    # fractions of the image otherwise: a width in the other unit makes holes wider than the image (a crash in the
    # middle of an epoch) or zero pixels wide (no effect).
    height, width = (args.get(name, inspect.signature(cls).parameters[name].default)
                     for name in ("hole_height_range", "hole_width_range"))
    if not (_pairs(height) and _pairs(width)):
        return  # not pairs of numbers: albumentations' own validation names them
    pixels = height[1] >= 1
    if (width[1] < 1) if pixels else (width[1] > 1):
        unit, other = ("pixels", "fractions") if pixels else ("fractions of the image size", "pixels")
        raise _fail(f"{path}.hole_width_range", f"{label}: in {unit}, as hole_height_range {_plain(height)!r} is, "
                                                f"got {_plain(width)!r} ({other}?)")


def _contains(value, kind: type) -> bool:
    """Whether value, or any item of it (lists, mapping values), is a `kind`."""
    if isinstance(value, kind):
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains(v, kind) for v in value)
    if isinstance(value, dict):
        return any(_contains(v, kind) for v in value.values())
    return False


def _takes(cls: type, name: str, kind: type) -> bool:
    """Whether the transform's argument accepts a `kind` (bool or str) as such, by its pydantic schema's
    annotation (a Literal of strings counts as str), else by the type of the signature's default."""
    schema = getattr(cls, "InitSchema", None)
    field = schema.model_fields.get(name) if schema is not None else None
    if field is None or field.annotation is None:
        param = inspect.signature(cls).parameters.get(name)
        return param is None or param.default in (param.empty, None) or isinstance(param.default, kind)

    def mentions(annotation) -> bool:
        if annotation is kind or isinstance(annotation, kind):  # the type itself, or a Literal's value
            return True
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is dict:  # {x: ..., y: ...}: the keys are not the values given
            args = args[1:]
        return any(mentions(a) for a in args)

    return mentions(field.annotation)


def _pairs(value) -> list[tuple[float, float]]:
    """The [low, high] pairs in an argument: itself, or the values of an {x: ..., y: ...} mapping."""
    if isinstance(value, dict):
        return [pair for v in value.values() for pair in _pairs(v)]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)):
        return [(value[0], value[1])]
    return []


def _probability_of(node: _Node) -> float:
    """A parsed transform's p, its class's default where the config leaves it out (OneOf weighs by it)."""
    if "p" in node.args:
        return float(node.args["p"])
    default = inspect.signature(node.cls).parameters.get("p")
    return float(default.default) if default is not None and _is_number(default.default) else 1.0


def _error_message(node: _Node, exc: Exception) -> str:
    """One line that starts with the config key of the offending argument where it can be told."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else exc
    if isinstance(cause, ValidationError):
        err = cause.errors()[0]
        arg = err["loc"][0] if err["loc"] else None
        text = err["msg"].removeprefix("Value error, ")
        got = "" if " got " in text else f", got {_plain(err.get('input'))!r}"
        message = f"{node.label}: {text}{got}"
    else:
        text = " ".join(str(exc).split())
        match = re.match(r"(\w+): (.*)", text)
        arg, message = (match.group(1), match.group(2)) if match else (None, text)
        if arg not in node.args:
            arg, message = None, f"{node.label}: {text}"
    if arg in node.args:
        return f"{node.arg_paths.get(arg, f'{node.path}.{arg}')}: {message}"
    return f"{node.path}: {message}"


def _instantiate(node: _Node, size: tuple[int, int]):
    args = dict(node.args)
    if node.auto_size:
        args["size"] = tuple(size)
    if node.children is not None:
        args["transforms"] = [_instantiate(child, size) for child in node.children]
    elif _validates_strictly(node.cls):
        # Turns albumentations' warn-and-use-defaults fallbacks into errors.
        args["strict"] = True
    try:
        return node.cls(**args)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise PolicyError(_error_message(node, exc)) from exc


def _validates_strictly(cls: type) -> bool:
    # albumentations' metaclass wraps __init__ (adding `strict`) only for classes that define an InitSchema.
    owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
    return "InitSchema" in vars(owner)


def _make_compose(nodes: list[_Node], size: tuple[int, int]) -> A.Compose:
    return A.Compose([_instantiate(node, size) for node in nodes])


# --------------------------------------------------------------------------------------------------------------
# The ImageDataGenerator vocabulary -> the same kind of nodes, in Keras' order of application:
# affine, channel shift, horizontal flip, vertical flip, brightness.

def _idg_nodes(idg, path: str) -> list[_Node]:
    if not isinstance(idg, dict):
        raise _fail(path, f"expected a mapping of ImageDataGenerator arguments, got {idg!r}")
    for key in idg:
        if key not in IDG_KEYS:
            close = difflib.get_close_matches(str(key), IDG_KEYS, n=1)
            raise _fail(f"{path}.{key}", "not a supported ImageDataGenerator argument"
                        + (f" (did you mean {close[0]!r}?)" if close else f"; supported: {', '.join(IDG_KEYS)}"))

    def node(cls, args, keys=None):
        arg_paths = {arg: f"{path}.{key}" for arg, key in (keys or {}).items()}
        return _Node(cls, args, path, f"{cls.__module__}.{cls.__name__}", arg_paths=arg_paths)

    nodes = []
    affine_keys = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
                   "fill_mode", "cval")
    affine = node(KerasAffine, {k: idg[k] for k in affine_keys if k in idg})
    # Validated even when every range is zero, so a bad fill_mode is reported regardless.
    if not _instantiate(affine, PLACEHOLDER_SIZE).is_identity:
        nodes.append(affine)
    if "channel_shift_range" in idg:  # checked even when it adds nothing, so `false` or a string is reported
        _checked(path, _check_number, "channel_shift_range", idg["channel_shift_range"], 0)
    if idg.get("channel_shift_range"):
        nodes.append(node(KerasChannelShift, {"channel_shift_range": idg["channel_shift_range"]}))
    for key, cls in (("horizontal_flip", A.HorizontalFlip), ("vertical_flip", A.VerticalFlip)):
        value = idg.get(key, False)
        if not isinstance(value, bool):
            raise _fail(f"{path}.{key}", f"expected true or false, got {value!r}")
        if value:
            nodes.append(node(cls, {"p": 0.5}))  # Keras flips each image with probability 0.5
    if idg.get("brightness_range") is not None:
        low, high = _checked(path, _check_pair, "brightness_range", idg["brightness_range"],
                             "a pair [lower, upper] with 0 <= lower <= upper", lambda lo, hi: 0 <= lo <= hi)
        # Keras multiplies by one factor per image (PIL's Brightness.enhance); MultiplicativeNoise with a single
        # multiplier for all pixels and channels is exactly that, clipped to [0, 255]. Keras truncates where this
        # rounds, so a pixel may differ by one level.
        nodes.append(node(A.MultiplicativeNoise, {"multiplier": (low, high), "per_channel": False,
                                                  "elementwise": False, "p": 1.0},
                          keys={"multiplier": "brightness_range"}))
    return nodes


# --------------------------------------------------------------------------------------------------------------

class Policy:
    """A validated augmentation policy. `policy(image, rng)` / `policy.augment_batch(images, rng)`: uint8 in,
    uint8 of the same shape out; the result depends only on the images and the state of `rng`."""

    def __init__(self, name: str, nodes: list[_Node], template: A.Compose, mix=None):
        self.name = name
        # Batch mixing (MixUp, CutMix: ablation/mixing.py), applied by the batches after these transforms.
        self.mix = mix
        self.transform_names = [node.cls.__name__ for node in nodes]
        self.is_identity = not nodes
        self._nodes = nodes
        every = [n for node in nodes for n in node.walk()]
        self._auto_size = any(n.auto_size for n in every)
        self._needs_rgb = any(n.cls.__name__ in RGB_ONLY for n in every)
        serialized = A.to_dict(template)
        for data, node in zip(serialized["transform"]["transforms"], nodes):
            _blank_auto_sizes(data, node)
        # Through JSON once: tuples become lists, so to_dict() equals what a JSON reader gets back.
        if mix is not None:
            serialized["mix"] = mix.to_dict()
        self._dict = json.loads(json.dumps(serialized))
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, {self.transform_names}, fingerprint={self.fingerprint!r})"

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.is_identity:
            return image
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"expected one HxWxC image, got shape {image.shape}")
        return self.augment_batch(image[None], rng)[0]

    def augment_batch(self, images: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None):
        """images (B, H, W, C) uint8 -> augmented images; with masks (B, H, W), (images, masks): each mask goes
        through the same spatial transforms as its image (albumentations' mask target, nearest-neighbour), and
        photometric ones leave it alone."""
        if self.is_identity:
            return images if masks is None else (images, masks)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"expected a uint8 batch of shape (B, H, W, C), got {images.dtype} {images.shape}")
        if masks is not None and np.shape(masks) != images.shape[:3]:
            raise ValueError(f"expected one (H, W) mask per image, {images.shape[:3]}, got {np.shape(masks)}")
        out_masks = None if masks is None else np.empty_like(masks)
        compose = self._compose(images.shape[1:3])
        # Masks (image-to-image tasks) go through albumentations' mask target, which only the Compose applies.
        batch_path = self._batch_path(compose) if masks is None else None
        if batch_path is not None:  # the ImageDataGenerator vocabulary: batch-wise, without a Compose per image
            return batch_path(images, rng)
        # One seed per batch: re-seeding albumentations per image costs more than the small transforms themselves.
        seed = int(rng.integers(2**63))
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        gray_via_rgb = self._needs_rgb and images.shape[-1] == 1
        out = empty_batch(images.shape, images.dtype)
        for i, image in enumerate(images):
            if gray_via_rgb:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
            data = compose(image=image) if masks is None else compose(image=image, mask=masks[i])
            result = data["image"]
            if gray_via_rgb:
                result = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY)
            if result.shape[:2] != out.shape[1:3] or result.size != out[i].size:
                raise PolicyError(f"{ROOT_KEY}: policy {self.name!r} turned a {images.shape[1:]} image into "
                                  f"{result.shape}; policies must keep the image shape (leave `size` out so it "
                                  f"follows the image)")
            out[i] = result.reshape(out.shape[1:])
            if out_masks is not None:
                out_masks[i] = data["mask"].reshape(out_masks.shape[1:])
        return out if masks is None else (out, out_masks)

    def split(self) -> tuple[Policy, Policy]:
        """(spatial, photometric): the policy's transforms that move pixels (albumentations' DualTransform, which
        also transform masks) and those that change their values only (ImageOnlyTransform), each in the policy's
        order. Image-to-image tasks apply the spatial part to the input, its target and its mask alike and the
        photometric part to the input only (ablation/tasks.py). A nested container (OneOf, ...) belongs to the
        part all its transforms belong to; one that mixes both raises PolicyError naming its key."""
        cached = self.__dict__.get("_split")
        if cached is None:
            parts: dict[str, list[_Node]] = {"spatial": [], "photometric": []}
            for node in self._nodes:
                for n in node.walk():
                    if n.children is None and _kind(n.cls) == "both":
                        raise _fail(n.path, f"{n.label} both moves pixels and changes their values, in an order "
                                            "drawn per image, which an image-to-image task cannot apply apart "
                                            "(spatial to the target and mask too); use separate spatial and "
                                            "photometric transforms")
                kinds = {_kind(n.cls) for n in node.walk() if n.children is None}
                if len(kinds) > 1:
                    raise _fail(node.path, f"{node.label} mixes spatial and photometric transforms, which an "
                                           "image-to-image task applies apart (spatial ones to the target and mask "
                                           "too); split it into two containers")
                parts[kinds.pop() if kinds else "photometric"].append(node)
            cached = self._split = tuple(
                Policy(f"{self.name}[{part}]", nodes, _make_compose(nodes, PLACEHOLDER_SIZE))
                for part, nodes in parts.items())
        return cached

    def _compose(self, size: tuple[int, int]) -> A.Compose:
        # albumentations transforms keep per-call state (params, generators): one Compose per thread, so keras'
        # PyDataset worker threads never share one, and one per image size for transforms that take `size`.
        cache = getattr(self._local, "composes", None)
        if cache is None:
            cache = self._local.composes = {}
        key = tuple(size) if self._auto_size else None
        if key not in cache:
            cache[key] = _make_compose(self._nodes, key or PLACEHOLDER_SIZE)
        return cache[key]

    def _batch_path(self, compose: A.Compose):
        from ablation.fastpath import BatchPath

        cache = self._local.__dict__.setdefault("batch_paths", {})
        if id(compose) not in cache:
            cache[id(compose)] = BatchPath.of(compose)
        return cache[id(compose)]

    def to_dict(self) -> dict:
        """albumentations' serialization of the policy (A.to_dict); a `size` that follows the image is null."""
        return json.loads(json.dumps(self._dict))

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self._dict, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __getstate__(self):
        # Thread-local composes cannot be pickled (multiprocessing workers); they are rebuilt on demand.
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()


def _kind(cls: type) -> str:
    """spatial (albumentations' DualTransform: also applied to masks) or photometric (ImageOnlyTransform);
    both for RandAugment, whose operations are of either kind. The dropouts (CoarseDropout, Erasing, GridDropout,
    XYMasking, PixelDropout) are DualTransforms, but they move nothing: they blank pixels of the input, which an
    image-to-image task must not copy into its target, so they count as photometric."""
    if issubclass(cls, RandAugment):
        return "both"
    if issubclass(cls, DROPOUTS):
        return "photometric"
    return "spatial" if issubclass(cls, A.DualTransform) else "photometric"


def _blank_auto_sizes(data: dict, node: _Node) -> None:
    if node.auto_size:
        data["size"] = None
    for child_data, child in zip(data.get("transforms", ()), node.children or ()):
        _blank_auto_sizes(child_data, child)


def build(cfg, image_shape: tuple[int, ...] | None = None) -> Policy:
    """The `augmentation` config node (DictConfig or dict) -> Policy; raises PolicyError on any bad setting.

    image_shape (H, W, C), optional: also try the policy once on a blank image of that shape, so problems that
    only show with real sizes (a crop larger than the image, a policy that changes the shape) surface before
    any data is loaded. Without it the policy adapts to each image's size at call time.
    """
    cfg = _plain(cfg)
    if not isinstance(cfg, dict):
        raise _fail(ROOT_KEY, f"expected a mapping with name and transforms, got {cfg!r}")
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise _fail(f"{ROOT_KEY}.{key}", f"unknown key; expected {', '.join(TOP_LEVEL_KEYS)}")
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{ROOT_KEY}.name", f"expected the policy's name (its file name), got {name!r}")
    if cfg.get("where", "host") not in PLACES:
        raise _fail(f"{ROOT_KEY}.where", f"expected one of {'|'.join(PLACES)}, got {cfg.get('where')!r}")
    if cfg.get("variant"):
        cfg, name = _apply_variant(cfg, name, cfg["variant"])

    nodes = []
    if cfg.get("idg") is not None:
        nodes += _idg_nodes(cfg["idg"], f"{ROOT_KEY}.idg")
    nodes += _parse_transforms(cfg.get("transforms"), f"{ROOT_KEY}.transforms")
    size = tuple(image_shape[:2]) if image_shape is not None else PLACEHOLDER_SIZE
    template = _make_compose(nodes, size)
    for node, transform in zip(nodes, template.transforms):
        try:  # the run records the policy as albumentations' JSON, so it must serialize
            A.to_dict(transform)
        except (NotImplementedError, ValueError, TypeError) as exc:
            raise _fail(node.path, f"{node.label}: cannot be recorded ({' '.join(str(exc).split())})") from None
    policy = Policy(name, nodes, template, mix=_mix(cfg.get("mix")))
    if image_shape is not None and not policy.is_identity:
        _try(policy, nodes, tuple(image_shape))
    return policy


def _mix(value):
    from ablation import mixing

    try:
        return mixing.parse(value)
    except mixing.MixError as e:
        raise PolicyError(str(e)) from None


def _try(policy: Policy, nodes: list[_Node], image_shape: tuple[int, ...]) -> None:
    """Apply the policy once to a blank image of the data's shape, so a transform that fails on such images does
    so now, named by its key, rather than in the middle of an epoch."""
    blank = np.zeros((1, *image_shape), np.uint8)
    try:
        policy.augment_batch(blank, np.random.default_rng(0))
        return
    except PolicyError:
        raise
    except Exception as exc:  # any failure here is the policy's, reported as a config error
        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    culprit = ROOT_KEY
    for node in nodes:  # blame the first transform that fails on its own
        try:
            Policy(policy.name, [node], _make_compose([node], image_shape[:2])).augment_batch(
                blank, np.random.default_rng(0))
        except Exception:
            culprit = f"{node.path}: {node.label}"
            break
    raise PolicyError(f"{culprit}: fails on a {'x'.join(map(str, image_shape))} image ({problem})")


# --------------------------------------------------------------------------------------------------------------
# Ablation units: what a leave-one-out or add-one-in design removes or keeps. A top-level transform is one
# unit (named by its class, with #2, #3 for repeats); an ImageDataGenerator argument is one unit (named by the
# argument), so `idg_classic-rotation_range` keeps the zoom and shifts of the same warp.

def units(cfg) -> list[str]:
    """The ablation units of a policy config, in order: its ImageDataGenerator arguments, then its transforms."""
    return [unit for unit, _ in _unit_index(_plain(cfg))]


def _unit_index(cfg: dict) -> list[tuple[str, tuple[str, object]]]:
    out: list[tuple[str, tuple[str, object]]] = []
    for key, value in (cfg.get("idg") or {}).items():
        if key not in IDG_SETTINGS and value not in (None, False, 0, 0.0):
            out.append((key, ("idg", key)))
    seen: dict[str, int] = {}
    for i, item in enumerate(cfg.get("transforms") or []):
        base = str(item.get("_target_", "?")).rpartition(".")[2] if isinstance(item, dict) else "?"
        seen[base] = seen.get(base, 0) + 1
        out.append((base if seen[base] == 1 else f"{base}#{seen[base]}", ("transforms", i)))
    mix = _mix(cfg.get("mix"))
    if mix is not None:  # MixUp / CutMix: one unit
        out.append((mix.label, ("mix", 0)))
    return out


def variant_name(policy: str, variant: str) -> str:
    return f"{policy}{variant}"


def _apply_variant(cfg: dict, name: str, variant) -> tuple[dict, str]:
    """`-Unit` removes one unit from the policy, `+Unit` keeps only that unit (plus the fill settings)."""
    key = f"{ROOT_KEY}.variant"
    if not isinstance(variant, str) or len(variant) < 2 or variant[0] not in "+-":
        raise _fail(key, f"expected -<unit> (leave one out) or +<unit> (add one in), got {variant!r}")
    index = dict(_unit_index(cfg))
    unit = variant[1:]
    if unit not in index:
        raise _fail(key, f"policy {name!r} has no unit {unit!r}; its units: {', '.join(index) or 'none'}")
    keep = {index[unit]} if variant[0] == "+" else set(index.values()) - {index[unit]}
    idg = cfg.get("idg") or {}
    new_idg = {k: v for k, v in idg.items() if k in IDG_SETTINGS or ("idg", k) in keep}
    new_transforms = [t for i, t in enumerate(cfg.get("transforms") or []) if ("transforms", i) in keep]
    out = {k: v for k, v in cfg.items() if k not in ("variant", "idg", "transforms", "mix")}
    out.update(idg=new_idg or None, transforms=new_transforms, mix=cfg.get("mix") if ("mix", 0) in keep else None)
    return out, variant_name(name, variant)
