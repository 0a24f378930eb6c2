"""RandAugment on the host, with Keras' RandAugment semantics (its operations, magnitudes and value range),
drawing the operations per image."""
from __future__ import annotations

import math
import os
from typing import Any

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np

from ablation.augment.checks import check_pair, check_probability, is_number, public_name

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
    if is_number(value):
        if not 0 <= value <= 1:
            raise ValueError(f"factor: expected {what}, got {value!r}")
        return 0.0, float(value)
    return check_pair("factor", value, what, lambda lo, hi: 0 <= lo <= hi <= 1)


class RandAugment(A.ImageOnlyTransform):
    """Keras 3's keras.layers.RandAugment on the host: per image, `num_ops` operations drawn uniformly with
    replacement from the 11 below and applied one after the other, each with a magnitude drawn from the range
    Keras derives from `factor`. Keras draws which operations apply once per batch (every image of a batch gets
    the same ones); this draws them per image, as RandAugment is defined (Cubuk et al., 2019), and so does the
    device side (ablation.augment.device.RandAugment, `augmentation.placement=device`).

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

    @classmethod
    def get_class_fullname(cls) -> str:
        return public_name(cls)  # as policies name it, and as recorded fingerprints hold it

    OPS = ("random_shear", "random_translation", "random_rotation", "random_brightness",
           "random_color_degeneration", "random_contrast", "random_sharpness", "random_posterization",
           "solarization", "auto_contrast", "equalization")

    def __init__(self, num_ops: int = 2, factor: float | tuple[float, float] = 0.5,
                 interpolation: int = cv2.INTER_LINEAR, p: float = 1.0):
        super().__init__(p=check_probability("p", p))
        if not isinstance(num_ops, int) or isinstance(num_ops, bool) or num_ops < 0:
            raise ValueError(f"num_ops: expected how many operations per image, an integer >= 0, got {num_ops!r}")
        self.num_ops = num_ops
        self._factor = _randaugment_factor(factor)
        self.factor = float(factor) if is_number(factor) else list(self._factor)
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


