"""Device-side augmentation (`augmentation.where=device`): the same policy as `augment.build` makes for the host,
built from Keras 3 preprocessing layers and placed in the model in front of the backbone, so that on a GPU the
augmentation runs there. Keras API only (`keras.ops`, `keras.random`), so any Keras backend can run it.

The layers take images in [0, 1] (the batches rescale before the model), so pixel-valued settings (cval, fill,
channel_shift_range) are divided by 255. Like Keras' own preprocessing layers, every layer here augments only in
training (`fit`, or `training=True`) and passes the images through unchanged otherwise (`predict`, `evaluate`).

Where a Keras layer has the host's semantics it is used as is (RandomRotation, RandomTranslation, RandomZoom,
RandomFlip). Where the nearest Keras layer means something else, a small layer below reproduces the host's
transform instead, and each says which Keras layer it replaces and why. What cannot be reproduced raises
augment.PolicyError naming the key and the transform.
"""
from __future__ import annotations

import importlib
import inspect
import math

import keras
import numpy as np
from keras import ops
from omegaconf import DictConfig, ListConfig, OmegaConf

from ablation import augment
from ablation.augment import ROOT_KEY, PolicyError

HOST = f"use {ROOT_KEY}.where=host"
# cv2 border modes (albumentations' border_mode) -> Keras fill modes. cv2.BORDER_REFLECT_101 (dcb|abcd|cba) has
# no Keras mode; Keras' "reflect" (dcba|abcd|dcba) repeats the edge pixel once more, a one-pixel difference.
BORDER_MODES = {0: "constant", 1: "nearest", 2: "reflect", 3: "wrap", 4: "reflect"}
# cv2 interpolation flags -> the two that keras.ops.image.affine_transform has.
INTERPOLATIONS = {0: "nearest", 1: "bilinear"}
# Transforms with a Keras layer of the same name that is still not the same augmentation: why, for the error.
NOT_EQUIVALENT = {
    "albumentations.CLAHE": "keras.layers.ContrastLimitedAdaptiveHistogramEqualization has one fixed clip limit, "
                            "equalises each channel on its own and runs in inference too",
}
# ITU-R 601 luma, as cv2.COLOR_RGB2GRAY (albumentations' ColorJitter uses it for contrast and saturation).
LUMA = (0.299, 0.587, 0.114)

_register = keras.saving.register_keras_serializable(package="ablation")


# --------------------------------------------------------------------------------------------------------------
# Layers. Each samples its parameters per image from its own SeedGenerator, so a seed makes a run reproducible
# and two layers never draw the same numbers.

class _Augmentation(keras.layers.Layer):
    """Base: identity unless training; subclasses implement augment(images) on a (B, H, W, C) float batch."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    # training defaults to True, as in Keras' preprocessing layers: Model.fit/predict pass it explicitly.
    def call(self, images, training=True):
        if not training:
            return images
        return self.augment(ops.cast(images, self.compute_dtype))

    def augment(self, images):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}

    def _uniform(self, shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, minval=low, maxval=high, dtype=self.compute_dtype, seed=self.generator)


def _per_image(values):
    """(B,) -> (B, 1, 1, 1), to broadcast one value per image over its pixels."""
    return ops.reshape(values, (-1, 1, 1, 1))


def _batch(images):
    return ops.shape(images)[0]


@_register
class Flip(_Augmentation):
    """Always mirrors (in training). keras.layers.RandomFlip flips with probability 0.5 only; this, inside
    RandomApply, gives any other probability (albumentations' HorizontalFlip(p=1), p=0.2, ...)."""

    def __init__(self, mode: str = "horizontal", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("horizontal", "vertical"):
            raise ValueError(f"mode: expected horizontal or vertical, got {mode!r}")
        self.mode = mode

    def augment(self, images):
        return ops.flip(images, axis=2 if self.mode == "horizontal" else 1)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@_register
class RandomApply(_Augmentation):
    """Applies `layer` to each image with probability `rate` (albumentations' `p`), else leaves it as it is. The
    layer runs on the whole batch and the result is selected per image: no data-dependent shapes, so it traces
    and compiles like any other layer."""

    def __init__(self, layer, rate: float, **kwargs):
        super().__init__(**kwargs)
        # From a saved config the layer arrives serialized.
        self.layer = keras.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer
        self.rate = float(rate)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def augment(self, images):
        chosen = self._uniform((_batch(images),)) < self.rate
        return ops.where(_per_image(chosen), self.layer(images, training=True), images)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer), "rate": self.rate}


class _Choice(_Augmentation):
    """Base of the layers that pick among child layers per image."""

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        # From a saved config the children arrive serialized.
        self.choices = [keras.saving.deserialize_keras_object(x) if isinstance(x, dict) else x for x in layers]

    def build(self, input_shape):
        for layer in self.choices:
            if not layer.built:
                layer.build(input_shape)

    def get_config(self):
        return {**super().get_config(), "layers": [keras.saving.serialize_keras_object(x) for x in self.choices]}


@_register
class RandomChoice(_Choice):
    """albumentations' OneOf: exactly one of `layers` per image, drawn with probability proportional to
    `weights` (the children's own p, which OneOf uses as weights and then ignores)."""

    def __init__(self, layers, weights, **kwargs):
        super().__init__(layers, **kwargs)
        total = float(sum(weights))
        self.weights_ = [float(w) / total for w in weights]

    def augment(self, images):
        # Inverse CDF: the index of the first cumulative weight above a uniform draw.
        bounds = np.cumsum(self.weights_)[:-1].tolist()
        u = self._uniform((_batch(images),))
        index = sum(ops.cast(u >= b, "int32") for b in bounds) if bounds else ops.zeros_like(u, "int32")
        out = images
        for k, layer in enumerate(self.choices):
            out = ops.where(_per_image(index == k), layer(images, training=True), out)
        return out

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_}


@_register
class RandomSubset(_Choice):
    """albumentations' SomeOf (replace=False): n of `layers` per image, chosen uniformly without replacement,
    applied in their listed order, each still subject to its own probability (wrap it in RandomApply)."""

    def __init__(self, layers, n: int, **kwargs):
        super().__init__(layers, **kwargs)
        self.n = int(n)

    def augment(self, images):
        # The n smallest of K uniform keys are a uniform n-subset.
        keys = self._uniform((_batch(images), len(self.choices)))
        ranks = ops.argsort(ops.argsort(keys, axis=1), axis=1)
        out = images
        for k, layer in enumerate(self.choices):
            out = ops.where(_per_image(ranks[:, k] < self.n), layer(out, training=True), out)
        return out

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@_register
class RandomShear(_Augmentation):
    """ImageDataGenerator's shear: an angle uniform in (-shear_range, shear_range) degrees, Keras' shear matrix
    (x' = x - sin(s) y, y' = cos(s) y) about the image centre, as augment.KerasAffine does on the host.
    keras.layers.RandomShear shears about the top-left corner, so it also shifts the image by up to
    tan(s) * height; that would ablate shear plus translation, not shear."""

    def __init__(self, shear_range: float, fill_mode: str = "nearest", fill_value: float = 0.0,
                 interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.shear_range = float(shear_range)
        self.fill_mode, self.fill_value, self.interpolation = fill_mode, float(fill_value), interpolation
        # Keras' own affine-warping layers opt out of XLA (TensorFlow's ImageProjectiveTransform has no kernel).
        self.supports_jit = False

    def augment(self, images):
        height = images.shape[1]
        s = self._uniform((_batch(images),), -self.shear_range, self.shear_range) * (math.pi / 180)
        sin, cos = ops.sin(s), ops.cos(s)
        cy = (height - 1) / 2  # a shear along x about the centre row moves x only
        zero, one = ops.zeros_like(s), ops.ones_like(s)
        # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2).
        transform = ops.stack([one, -sin, sin * cy, zero, cos, cy * (1 - cos), zero, zero], axis=1)
        return ops.image.affine_transform(images, transform, interpolation=self.interpolation,
                                          fill_mode=self.fill_mode, fill_value=self.fill_value)

    def get_config(self):
        return {**super().get_config(), "shear_range": self.shear_range, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "interpolation": self.interpolation}


@_register
class RandomScaleShift(_Augmentation):
    """x * a + b, clipped to [0, 1], with a and b uniform per image. ImageDataGenerator's brightness_range is
    (a in range, b = 0); albumentations' RandomBrightnessContrast is a = 1 + contrast, b = brightness.
    keras.layers.RandomBrightness adds only, and keras.layers.RandomContrast scales about each channel's mean
    where albumentations scales about 0, so neither reproduces these."""

    def __init__(self, scale_range=(1.0, 1.0), offset_range=(0.0, 0.0), **kwargs):
        super().__init__(**kwargs)
        self.scale_range = tuple(float(v) for v in scale_range)
        self.offset_range = tuple(float(v) for v in offset_range)

    def augment(self, images):
        batch = _batch(images)
        scale = _per_image(self._uniform((batch,), *self.scale_range))
        offset = _per_image(self._uniform((batch,), *self.offset_range))
        return ops.clip(images * scale + offset, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "scale_range": self.scale_range, "offset_range": self.offset_range}


@_register
class RandomChannelShift(_Augmentation):
    """ImageDataGenerator's channel_shift_range: one intensity uniform in (-r, r) added to every channel, clipped
    to the image's own min and max (augment.KerasChannelShift on the host). No Keras layer does this."""

    def __init__(self, intensity: float, **kwargs):
        super().__init__(**kwargs)
        self.intensity = float(intensity)

    def augment(self, images):
        shift = _per_image(self._uniform((_batch(images),), -self.intensity, self.intensity))
        low = ops.min(images, axis=(1, 2, 3), keepdims=True)
        high = ops.max(images, axis=(1, 2, 3), keepdims=True)
        return ops.minimum(ops.maximum(images + shift, low), high)

    def get_config(self):
        return {**super().get_config(), "intensity": self.intensity}


@_register
class RandomGaussNoise(_Augmentation):
    """albumentations' GaussNoise: per image a standard deviation uniform in std_range and a mean uniform in
    mean_range (fractions of the intensity range), noise per pixel (and per channel), clipped to [0, 1].
    keras.layers.GaussianNoise has one fixed stddev and does not clip."""

    def __init__(self, std_range, mean_range=(0.0, 0.0), per_channel: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.std_range = tuple(float(v) for v in std_range)
        self.mean_range = tuple(float(v) for v in mean_range)
        self.per_channel = bool(per_channel)

    def augment(self, images):
        batch = _batch(images)
        std = _per_image(self._uniform((batch,), *self.std_range))
        mean = _per_image(self._uniform((batch,), *self.mean_range))
        channels = images.shape[3] if self.per_channel else 1
        noise = keras.random.normal((batch, images.shape[1], images.shape[2], channels), dtype=self.compute_dtype,
                                    seed=self.generator)
        return ops.clip(images + noise * std + mean, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "std_range": self.std_range, "mean_range": self.mean_range,
                "per_channel": self.per_channel}


@_register
class ColorJitter(_Augmentation):
    """albumentations' (torchvision's) ColorJitter: brightness multiplies, contrast and saturation blend with
    the grey mean and the grey image, hue rotates the colour wheel by a fraction of a turn; the four in a random
    order per image. Saturation and hue leave 1-channel images as they are, as on the host.
    keras.layers.RandomColorJitter adds brightness, contrasts about each channel's mean and maps saturation
    through s / (1 - s), so the same numbers would mean a different augmentation."""

    def __init__(self, brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(0.0, 0.0),
                 **kwargs):
        super().__init__(**kwargs)
        self.brightness = tuple(float(v) for v in brightness)
        self.contrast = tuple(float(v) for v in contrast)
        self.saturation = tuple(float(v) for v in saturation)
        self.hue = tuple(float(v) for v in hue)

    def _grey(self, images):
        if images.shape[3] == 1:
            return images
        return ops.sum(images * ops.convert_to_tensor(LUMA, self.compute_dtype), axis=3, keepdims=True)

    def augment(self, images):
        batch = _batch(images)
        factors = [_per_image(self._uniform((batch,), *r))
                   for r in (self.brightness, self.contrast, self.saturation, self.hue)]
        colour = images.shape[3] == 3
        adjust = [lambda x, f: ops.clip(x * f, 0.0, 1.0),
                lambda x, f: ops.clip(x * f + ops.mean(self._grey(x), axis=(1, 2, 3), keepdims=True) * (1 - f),
                                      0.0, 1.0),
                (lambda x, f: ops.clip(x * f + self._grey(x) * (1 - f), 0.0, 1.0)) if colour else None,
                self._shift_hue if colour else None]
        # A random permutation per image; step k applies, to each image, the op its permutation puts k-th.
        order = ops.argsort(self._uniform((batch, 4)), axis=1)
        out = images
        for step in range(4):
            stepped = out
            for i, op in enumerate(adjust):
                if op is not None:
                    stepped = ops.where(_per_image(order[:, step] == i), op(out, factors[i]), stepped)
            out = stepped
        return out

    @staticmethod
    def _shift_hue(images, factor):
        hsv = ops.image.rgb_to_hsv(images)
        hue = ops.mod(hsv[..., :1] + factor, 1.0)
        return ops.clip(ops.image.hsv_to_rgb(ops.concatenate([hue, hsv[..., 1:]], axis=-1)), 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "hue": self.hue}


@_register
class RandomResizedCrop(_Augmentation):
    """albumentations' RandomResizedCrop back to the image's own size: up to 10 tries of an area fraction in
    `scale` and a log-uniform aspect ratio in `ratio` that fit, else the central crop, at an integer position,
    resized by one affine warp (cv2.resize's pixel-centre mapping). Keras' RandomCrop + Resizing crops a fixed
    size and RandomZoom draws no aspect ratio, so neither gives this distribution."""

    TRIES = 10

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.scale = tuple(float(v) for v in scale)
        self.ratio = tuple(float(v) for v in ratio)
        self.interpolation = interpolation
        self.supports_jit = False

    def _fallback(self, height: int, width: int) -> tuple[int, int]:
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            return round(width / self.ratio[0]), width
        if in_ratio > self.ratio[1]:
            return height, round(height * self.ratio[1])
        return height, width

    def augment(self, images):
        batch, height, width = _batch(images), images.shape[1], images.shape[2]
        area = self._uniform((batch, self.TRIES), *self.scale) * (height * width)
        log_ratio = self._uniform((batch, self.TRIES), math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = ops.round(ops.sqrt(area * ops.exp(log_ratio)))
        h = ops.round(ops.sqrt(area / ops.exp(log_ratio)))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ops.expand_dims(ops.argmax(ops.cast(fits, "int32"), axis=1), 1)
        any_fit = ops.any(fits, axis=1)
        fall_h, fall_w = self._fallback(height, width)
        h = ops.where(any_fit, ops.take_along_axis(h, first, axis=1)[:, 0], float(fall_h))
        w = ops.where(any_fit, ops.take_along_axis(w, first, axis=1)[:, 0], float(fall_w))
        # A fitting crop starts anywhere in [0, size - crop]; the fallback is centred.
        start = self._uniform((batch, 2))
        y0 = ops.where(any_fit, ops.floor((height - h + 1) * start[:, 0]), float((height - fall_h) // 2))
        x0 = ops.where(any_fit, ops.floor((width - w + 1) * start[:, 1]), float((width - fall_w) // 2))
        sx, sy = w / width, h / height
        zero = ops.zeros_like(sx)
        transform = ops.stack([sx, zero, x0 + 0.5 * sx - 0.5, zero, sy, y0 + 0.5 * sy - 0.5, zero, zero], axis=1)
        return ops.image.affine_transform(images, transform, interpolation=self.interpolation, fill_mode="nearest")

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "ratio": self.ratio,
                "interpolation": self.interpolation}


@_register
class CoarseDropout(_Augmentation):
    """albumentations' CoarseDropout: a number of holes uniform in num_holes_range, each of a height and width
    drawn from the ranges (fractions of the image if the upper height bound is < 1, else pixels), at an integer
    position inside the image, filled with `fill`. keras.layers.RandomErasing erases one patch whose sides are
    square roots of its `scale`, so its numbers mean something else."""

    def __init__(self, num_holes_range=(1, 1), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2),
                 fill=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_holes_range = tuple(int(v) for v in num_holes_range)
        self.hole_height_range = tuple(float(v) for v in hole_height_range)
        self.hole_width_range = tuple(float(v) for v in hole_width_range)
        self.fill = [float(v) for v in fill] if isinstance(fill, (list, tuple)) else float(fill)

    def _sizes(self, batch, size: int, bounds, pixels: bool):
        draw = self._uniform((batch, self.num_holes_range[1]))
        if pixels:
            low, high = bounds[0], min(bounds[1], size)
            return ops.floor(draw * (high - low + 1)) + low
        return ops.floor(size * (bounds[0] + draw * (bounds[1] - bounds[0])))

    def augment(self, images):
        batch, height, width = _batch(images), images.shape[1], images.shape[2]
        low, high = self.num_holes_range
        count = ops.floor(self._uniform((batch, 1)) * (high - low + 1)) + low
        active = ops.arange(high, dtype=self.compute_dtype)[None, :] < count
        pixels = self.hole_height_range[1] >= 1  # albumentations decides by the height range, for both sides
        h = self._sizes(batch, height, self.hole_height_range, pixels)
        w = self._sizes(batch, width, self.hole_width_range, pixels)
        y0 = ops.floor(self._uniform((batch, high)) * (height - h + 1))
        x0 = ops.floor(self._uniform((batch, high)) * (width - w + 1))
        ys = ops.arange(height, dtype=self.compute_dtype)[None, :, None, None]
        xs = ops.arange(width, dtype=self.compute_dtype)[None, None, :, None]

        def hole(k):  # (B, H, W, 1)
            inside = ((ys >= y0[:, k, None, None, None]) & (ys < (y0 + h)[:, k, None, None, None])
                      & (xs >= x0[:, k, None, None, None]) & (xs < (x0 + w)[:, k, None, None, None]))
            return inside & active[:, k, None, None, None]

        mask = hole(0)
        for k in range(1, high):
            mask = mask | hole(k)
        fill = ops.cast(ops.convert_to_tensor(self.fill), self.compute_dtype)
        return ops.where(mask, ops.broadcast_to(fill, ops.shape(images)), images)

    def get_config(self):
        return {**super().get_config(), "num_holes_range": self.num_holes_range,
                "hole_height_range": self.hole_height_range, "hole_width_range": self.hole_width_range,
                "fill": self.fill}


@_register
class RandAugment(keras.layers.RandAugment):
    """keras.layers.RandAugment with its operations drawn per image, as augment.RandAugment does on the host:
    Keras' own layer draws which `num_ops` operations apply once per batch, so every image of a batch gets the
    same ones. Everything else is Keras': the 11 operations, their magnitude ranges from `factor`, passing images
    through outside training, except equalization, which counts one histogram per image and channel as the host
    does (Keras' Equalization counts one over the whole batch). Costs what Keras' layer costs: that too computes
    every operation at every step and selects."""

    def get_random_transformation(self, data, training=True, seed=None):
        transformation = super().get_random_transformation(data, training=training, seed=seed)
        if transformation is None:
            return None
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.core.shape(images)
        batch = shape[0] if len(shape) == 4 else 1
        # (num_ops, batch): operation i of image b, in place of Keras' (num_ops,) for the whole batch.
        transformation["layer_idxes"] = self.backend.random.randint(
            (self.num_ops, batch), 0, len(self._AUGMENT_LAYERS), seed=self._get_seed_generator(self.backend._backend))
        return transformation

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        chosen, transforms = transformation["layer_idxes"], transformation["transforms"]
        for i in range(self.num_ops):
            for index, (name, value) in enumerate(transforms.items()):
                selected = self.backend.numpy.reshape(chosen[i] == index, (-1, 1, 1, 1))
                transformed = (self._equalize_each(images) if name == "equalization"
                               else getattr(self, name).transform_images(images, value))
                images = self.backend.numpy.where(selected, self.backend.cast(transformed, self.compute_dtype), images)
        return images

    def _equalize_each(self, images):
        """Keras' Equalization (its 256-bin lookup table over value_range; a channel of one value left as it is),
        one histogram per image and channel: every (image, channel) pair's bins are a segment of one flat
        segment sum, which traces with a dynamic batch size on TensorFlow and compiles on JAX."""
        ops = self.backend.numpy
        low, high = self.value_range
        values = (self.backend.cast(images, "float32") - low) * (255.0 / (high - low))
        bins = self.backend.cast(ops.clip(values, 0, 255), "int32")  # (B, H, W, C)
        shape = self.backend.core.shape(images)
        channels = shape[-1]
        pair = ops.reshape(ops.arange(shape[0] * channels, dtype="int32"), (-1, 1, 1, channels))
        segments = ops.reshape(pair * 256 + bins, (-1,))
        hist = self.backend.math.segment_sum(ops.ones_like(segments, dtype="float32"), segments,
                                             num_segments=shape[0] * channels * 256)
        hist = ops.reshape(hist, (-1, 256))  # (B * C, 256)
        cdf = ops.cumsum(hist, axis=-1)
        cdf_min = ops.min(ops.where(cdf > 0, cdf, ops.full_like(cdf, float("inf"))), axis=-1, keepdims=True)
        denominator = cdf[:, -1:] - cdf_min
        lookup = ops.clip(ops.round((cdf - cdf_min) * 255 / ops.where(denominator == 0, 1.0, denominator)), 0, 255)
        flat = ops.count_nonzero(hist, axis=-1) <= 1  # one value only: nothing to spread, the channel stays
        equalized = ops.take(ops.reshape(lookup, (-1,)), segments) * ((high - low) / 255.0) + low
        keep = ops.take(flat, segments // 256)
        original = ops.reshape(self.backend.cast(images, "float32"), (-1,))
        return ops.reshape(ops.where(keep, original, equalized), shape)


# --------------------------------------------------------------------------------------------------------------
# Policy config -> layers.

class _Builder:
    def __init__(self, input_shape: tuple[int, int, int], seed: int):
        self.height, self.width, self.channels = (int(v) for v in input_shape)
        self._seed, self._count = int(seed), 0

    def seed(self) -> int:
        # Layers seeded alike would draw alike (two flips always together); one stream per layer instead.
        self._count += 1
        return int(np.random.SeedSequence([self._seed, self._count]).generate_state(1)[0] >> 1)

    def keras_layer(self, path: str, label: str, cls, **kwargs):
        try:
            return cls(seed=self.seed(), **kwargs)
        except (ValueError, NotImplementedError) as e:
            raise PolicyError(f"{path}: {label}: {' '.join(str(e).split())}; {HOST}") from None

    # ---- ImageDataGenerator vocabulary, in the host's order: affine, channel shift, flips, brightness.

    def idg(self, idg: dict, path: str, label: str = "ImageDataGenerator") -> list:
        fill = {"fill_mode": idg.get("fill_mode", "nearest"), "fill_value": float(idg.get("cval", 0.0)) / 255}
        out = []
        # One warp on the host (R @ T @ Shear @ Zoom, output -> input); here one layer each in the order that
        # composes to the same map. Each resamples, so the device result is a little softer.
        if idg.get("rotation_range"):
            out.append(self.keras_layer(f"{path}.rotation_range", label, keras.layers.RandomRotation,
                                        factor=idg["rotation_range"] / 360, **fill))
        shifts = {key: self._shift_fraction(idg.get(key, 0), size, f"{path}.{key}", label)
                  for key, size in (("width_shift_range", self.width), ("height_shift_range", self.height))}
        if any(shifts.values()):
            out.append(self.keras_layer(f"{path}.width_shift_range", label, keras.layers.RandomTranslation,
                                        height_factor=shifts["height_shift_range"],
                                        width_factor=shifts["width_shift_range"], **fill))
        if idg.get("shear_range"):
            out.append(self.keras_layer(f"{path}.shear_range", label, RandomShear, shear_range=idg["shear_range"],
                                        **fill))
        low, high = augment._zoom_bounds(idg.get("zoom_range", 0.0))
        if (low, high) != (1.0, 1.0):
            # IDG's zoom z and RandomZoom's 1 + factor are the same number (> 1 shows a smaller image); both draw
            # x and y separately.
            out.append(self.keras_layer(f"{path}.zoom_range", label, keras.layers.RandomZoom,
                                        height_factor=(low - 1, high - 1), width_factor=(low - 1, high - 1),
                                        **fill))
        if idg.get("channel_shift_range"):
            out.append(RandomChannelShift(idg["channel_shift_range"] / 255, seed=self.seed()))
        for key, mode in (("horizontal_flip", "horizontal"), ("vertical_flip", "vertical")):
            if idg.get(key):
                out.append(keras.layers.RandomFlip(mode, seed=self.seed()))
        if idg.get("brightness_range") is not None:
            out.append(RandomScaleShift(scale_range=idg["brightness_range"], seed=self.seed()))
        return out

    @staticmethod
    def _shift_fraction(value, size: int, path: str, label: str) -> float:
        # IDG: a float < 1 is a fraction of the size, otherwise pixels. Integer ranges draw whole pixels on the
        # host; RandomTranslation draws any fraction.
        fraction = value if isinstance(value, float) and value < 1 else value / size
        if fraction > 1:
            raise PolicyError(f"{path}: {label}: a shift of {value} pixels is more than the image size {size}; "
                              f"RandomTranslation moves at most one image size; {HOST}")
        return float(fraction)

    # ---- albumentations transforms.

    def transforms(self, items: list, paths: list[str]) -> list:
        return [layer for item, path in zip(items, paths) for layer in self.transform(item, path)]

    def transform(self, item: dict, path: str, forced: bool = False) -> list:
        """One config item -> its layers; `forced` when a OneOf has already decided that it applies."""
        label = item["_target_"]
        args = {k: v for k, v in item.items() if k != "_target_"}
        cls = _target_class(label)
        if label.startswith("albumentations.") and cls.__name__ in ("OneOf", "SomeOf", "Sequential"):
            return self._compose(cls, label, args, path, forced)
        if label not in _CONVERTERS and label not in _FLIPS:
            why = f" ({NOT_EQUIVALENT[label]})" if label in NOT_EQUIVALENT else ""
            raise PolicyError(f"{path}: {label} has no Keras layer equivalent{why}; {HOST}")
        if "size" in inspect.signature(cls).parameters and "size" not in args:
            args["size"] = (self.height, self.width)
        # The host's own transform object: its attributes are the normalised arguments (ranges as pairs,
        # defaults filled in), so each converter reads what the host will actually do.
        transform = cls(**args)
        p = 1.0 if forced else float(transform.p)
        if label in _FLIPS:
            # RandomFlip flips with probability exactly 0.5; any other p is a certain flip inside RandomApply(p).
            if p == 0.5:
                return [keras.layers.RandomFlip(_FLIPS[label], seed=self.seed())]
            return self._with_p([Flip(_FLIPS[label])], p)
        return self._with_p(_CONVERTERS[label](self, transform, path, label), p)

    def _with_p(self, layers: list, p: float) -> list:
        if not layers or p >= 1:
            return layers
        if p <= 0:
            return []
        inner = layers[0] if len(layers) == 1 else keras.Sequential(layers)
        return [RandomApply(inner, rate=p, seed=self.seed())]

    def _compose(self, cls, label: str, args: dict, path: str, forced: bool) -> list:
        items = args["transforms"]
        paths = [f"{path}.transforms[{i}]" for i in range(len(items))]
        p = 1.0 if forced else float(args.get("p", _default(cls, "p")))
        if cls.__name__ == "Sequential":
            return self._with_p(self.transforms(items, paths), p)
        if cls.__name__ == "OneOf":
            # (a OneOf whose choices all have p 0 is refused by the policy's own check, run first)
            weights = [float(item.get("p", _default(_target_class(item["_target_"]), "p"))) for item in items]
            children = [self._one(self.transform(item, sub, forced=True)) for item, sub in zip(items, paths)]
            return self._with_p([RandomChoice(children, weights, seed=self.seed())], p)
        if args.get("replace", False):
            raise PolicyError(f"{path}.replace: {label}(replace=True) has no Keras layer equivalent; {HOST}")
        n = int(args.get("n", 1))
        children = [self._one(self.transform(item, sub)) for item, sub in zip(items, paths)]
        if n >= len(children):
            return self._with_p(children, p)
        return self._with_p([RandomSubset(children, n, seed=self.seed())], p)

    @staticmethod
    def _one(layers: list):
        if not layers:
            return keras.layers.Identity()
        return layers[0] if len(layers) == 1 else keras.Sequential(layers)


def _target_class(label: str):
    module, _, attr = label.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _default(cls, name: str):
    return inspect.signature(cls).parameters[name].default


def _unsupported(path: str, label: str, arg: str, value, why: str) -> PolicyError:
    return PolicyError(f"{path}.{arg}: {label}({arg}={value!r}) has no Keras layer equivalent ({why}); {HOST}")


def _fill_mode(t, path: str, label: str) -> dict:
    border = int(t.border_mode)
    if border not in BORDER_MODES:
        raise _unsupported(path, label, "border_mode", border, "Keras fills constant, nearest, reflect or wrap")
    fill = t.fill
    if isinstance(fill, (list, tuple)):
        if len(set(fill)) != 1:
            raise _unsupported(path, label, "fill", fill, "Keras fills every channel with one value")
        fill = fill[0]
    return {"fill_mode": BORDER_MODES[border], "fill_value": float(fill) / 255,
            "interpolation": _interpolation(t, path, label)}


def _interpolation(t, path: str, label: str) -> str:
    flag = int(t.interpolation)
    if flag not in INTERPOLATIONS:
        raise _unsupported(path, label, "interpolation", flag, "Keras warps with nearest or bilinear only")
    return INTERPOLATIONS[flag]


def _rotate(b: _Builder, t, path, label):
    if t.crop_border:
        raise _unsupported(path, label, "crop_border", True, "Keras rotations keep the image size and fill")
    low, high = t.limit
    return [b.keras_layer(f"{path}.limit", label, keras.layers.RandomRotation, factor=(low / 360, high / 360),
                          **_fill_mode(t, path, label))]


def _affine(b: _Builder, t, path, label):
    """albumentations' Affine (and ShiftScaleRotate, an Affine) where its parts map onto Keras' layers: rotate,
    translate_percent/translate_px, scale; as separate warps in the order rotate, translate, scale."""
    if t.fit_output:
        raise _unsupported(path, label, "fit_output", True, "Keras keeps the image size")
    if t.balanced_scale:
        raise _unsupported(path, label, "balanced_scale", True, "RandomZoom draws the zoom uniformly")
    if any(v != 0 for v in (*t.shear["x"], *t.shear["y"])):
        raise _unsupported(path, label, "shear", t.shear, "no Keras layer shears x and y; ImageDataGenerator's "
                                                         "shear_range has one")
    fill = _fill_mode(t, path, label)
    out = []
    if tuple(t.rotate) != (0, 0):
        out.append(b.keras_layer(f"{path}.rotate", label, keras.layers.RandomRotation,
                                 factor=(t.rotate[0] / 360, t.rotate[1] / 360), **fill))
    if t.translate_percent is not None:
        tx, ty = tuple(t.translate_percent["x"]), tuple(t.translate_percent["y"])
    else:
        tx = tuple(v / b.width for v in t.translate_px["x"])
        ty = tuple(v / b.height for v in t.translate_px["y"])
    if any((*tx, *ty)):
        out.append(b.keras_layer(f"{path}.translate_percent", label, keras.layers.RandomTranslation,
                                 height_factor=ty, width_factor=tx, **fill))
    sx, sy = tuple(t.scale["x"]), tuple(t.scale["y"])
    if (sx, sy) != ((1.0, 1.0), (1.0, 1.0)):
        # albumentations' scale s > 1 enlarges; RandomZoom's 1 + f > 1 shrinks, so f = 1/s - 1. The host draws s
        # uniformly, RandomZoom draws 1/s uniformly: the same range, a slightly different spread inside it.
        def factor(lo, hi):
            return (1 / hi - 1, 1 / lo - 1)
        zoom = {"height_factor": factor(*sy)}
        if not t.keep_ratio:
            zoom["width_factor"] = factor(*sx)
        out.append(b.keras_layer(f"{path}.scale", label, keras.layers.RandomZoom, **zoom, **fill))
    return out


def _brightness_contrast(b: _Builder, t, path, label):
    if not t.brightness_by_max:
        raise _unsupported(path, label, "brightness_by_max", False, "offsets by the image mean are not built")
    if t.ensure_safe_range:
        raise _unsupported(path, label, "ensure_safe_range", True, "its range clamping is not built")
    low, high = t.contrast_limit
    return [RandomScaleShift(scale_range=(1 + low, 1 + high), offset_range=t.brightness_limit, seed=b.seed())]


def _color_jitter(b: _Builder, t, path, label):
    return [ColorJitter(brightness=t.brightness, contrast=t.contrast, saturation=t.saturation, hue=t.hue,
                        seed=b.seed())]


def _gauss_noise(b: _Builder, t, path, label):
    if t.noise_scale_factor != 1:
        raise _unsupported(path, label, "noise_scale_factor", t.noise_scale_factor,
                           "noise is drawn per pixel, not resized from a coarser grid")
    return [RandomGaussNoise(std_range=t.std_range, mean_range=t.mean_range, per_channel=t.per_channel,
                             seed=b.seed())]


def _random_resized_crop(b: _Builder, t, path, label):
    if tuple(t.size) != (b.height, b.width):
        raise _unsupported(path, label, "size", list(t.size), f"the device keeps the image size "
                                                              f"{[b.height, b.width]}; leave size out")
    return [RandomResizedCrop(scale=t.scale, ratio=t.ratio, interpolation=_interpolation(t, path, label),
                              seed=b.seed())]


def _coarse_dropout(b: _Builder, t, path, label):
    fill = t.fill
    if isinstance(fill, str):
        raise _unsupported(path, label, "fill", fill, "holes are filled with a constant")
    if isinstance(fill, (list, tuple)) and len(fill) not in (1, b.channels):
        raise _unsupported(path, label, "fill", list(fill), f"expected one value or {b.channels}")
    fill = [v / 255 for v in fill] if isinstance(fill, (list, tuple)) else fill / 255
    return [CoarseDropout(num_holes_range=t.num_holes_range, hole_height_range=t.hole_height_range,
                          hole_width_range=t.hole_width_range, fill=fill, seed=b.seed())]


def _keras_affine(b: _Builder, t, path, label):
    idg = {"rotation_range": t.rotation_range, "width_shift_range": t.width_shift_range,
           "height_shift_range": t.height_shift_range, "shear_range": t.shear_range, "zoom_range": t.zoom_range,
           "fill_mode": t.fill_mode, "cval": t.cval}
    return b.idg(idg, path, label)


def _keras_channel_shift(b: _Builder, t, path, label):
    return b.idg({"channel_shift_range": t.channel_shift_range}, path, label)


def _rand_augment(b: _Builder, t, path, label):
    """keras.layers.RandAugment (RandAugment above: operations drawn per image) with the host's num_ops, factor
    and interpolation; augment.RandAugment mirrors its operations and magnitude ranges."""
    if t.num_ops == 0:
        return []
    return [b.keras_layer(path, label, RandAugment, value_range=(0, 1), num_ops=t.num_ops,
                          factor=t.factor, interpolation=_interpolation(t, path, label))]


_FLIPS = {"albumentations.HorizontalFlip": "horizontal", "albumentations.VerticalFlip": "vertical"}
_CONVERTERS = {
    "albumentations.Rotate": _rotate,
    "albumentations.Affine": _affine,
    "albumentations.ShiftScaleRotate": _affine,
    "albumentations.RandomBrightnessContrast": _brightness_contrast,
    "albumentations.ColorJitter": _color_jitter,
    "albumentations.GaussNoise": _gauss_noise,
    "albumentations.RandomResizedCrop": _random_resized_crop,
    "albumentations.CoarseDropout": _coarse_dropout,
    "ablation.augment.KerasAffine": _keras_affine,
    "ablation.augment.KerasChannelShift": _keras_channel_shift,
    "ablation.augment.RandAugment": _rand_augment,
}


# --------------------------------------------------------------------------------------------------------------

def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg


def layers_for(cfg, input_shape: tuple[int, int, int], seed: int) -> keras.Sequential | None:
    """The `augmentation` config node -> a Sequential of Keras layers that augments like the host policy does, or
    None for a policy that changes nothing. Raises PolicyError, one line naming the key and the transform, for a
    bad setting (the host's own checks, run first) or for a transform no Keras layer reproduces."""
    cfg = _plain(cfg)
    input_shape = tuple(int(v) for v in input_shape)
    policy = augment.build(cfg, image_shape=input_shape)
    if policy.is_identity:
        return None
    name = cfg["name"]
    transforms = list(cfg.get("transforms") or [])
    if cfg.get("variant"):
        original = transforms
        cfg, name = augment._apply_variant(cfg, name, cfg["variant"])
        transforms = list(cfg.get("transforms") or [])
        # Error messages name the key in the file the user wrote, not in the variant's shortened list.
        indices = [next(i for i, item in enumerate(original) if item is kept) for kept in transforms]
    else:
        indices = list(range(len(transforms)))

    builder = _Builder(input_shape, seed)
    layers = []
    if cfg.get("idg"):
        layers += builder.idg(cfg["idg"], f"{ROOT_KEY}.idg")
    layers += builder.transforms(transforms, [f"{ROOT_KEY}.transforms[{i}]" for i in indices])
    if not layers:
        return None
    return keras.Sequential([keras.Input(shape=input_shape), *layers], name=f"augmentation_{_safe(name)}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def wrap(model: keras.Model, augmentation: keras.Sequential | None) -> keras.Model:
    """`model` with `augmentation` in front: augments in fit, and in predict/evaluate is the bare model."""
    if augmentation is None:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="images")
    return keras.Model(inputs, model(augmentation(inputs)), name=model.name)


def unwrap(model: keras.Model) -> keras.Model:
    """The model wrap() put augmentation in front of (its layers are shared), or `model` itself when it has none."""
    layers = getattr(model, "layers", [])
    if len(layers) == 3 and layers[1].name.startswith("augmentation_"):  # the input, the augmentation, the model
        return layers[2]
    return model


__all__ = ["layers_for", "wrap", "unwrap", "Flip", "RandomApply", "RandomChoice", "RandomSubset", "RandomShear",
           "RandomScaleShift", "RandomChannelShift", "RandomGaussNoise", "ColorJitter", "RandomResizedCrop",
           "CoarseDropout", "RandAugment"]

