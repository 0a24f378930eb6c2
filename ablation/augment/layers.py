"""Keras layers that augment like the host policy does (`augmentation.placement=device`): the base class, the
containers (flip, apply with a probability, choose one, choose some) and the spatial layers. The photometric ones
are in pixel_layers; which layer a transform becomes is decided in device.

The layers take images in [0, 1] (the batches rescale before the model), so pixel-valued settings (cval, fill)
are divided by 255. Like Keras' own preprocessing layers, every layer here augments only in training (`fit`, or
`training=True`) and passes the images through unchanged otherwise (`predict`, `evaluate`). Keras API only
(`keras.ops`, `keras.random`), so any Keras backend can run them.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# Saved models name these layers `ablation>Flip` etc., whichever module defines them.
register = keras.saving.register_keras_serializable(package="ablation")


# --------------------------------------------------------------------------------------------------------------
# Layers. Each samples its parameters per image from its own SeedGenerator, so a seed makes a run reproducible
# and two layers never draw the same numbers.

class Augmentation(keras.layers.Layer):
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


def per_image(values):
    """(B,) -> (B, 1, 1, 1), to broadcast one value per image over its pixels."""
    return ops.reshape(values, (-1, 1, 1, 1))


def as_batch(images):
    return ops.shape(images)[0]


@register
class Flip(Augmentation):
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


@register
class RandomApply(Augmentation):
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
        chosen = self._uniform((as_batch(images),)) < self.rate
        return ops.where(per_image(chosen), self.layer(images, training=True), images)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer), "rate": self.rate}


class _Choice(Augmentation):
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


@register
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
        u = self._uniform((as_batch(images),))
        index = sum(ops.cast(u >= b, "int32") for b in bounds) if bounds else ops.zeros_like(u, "int32")
        out = images
        for k, layer in enumerate(self.choices):
            out = ops.where(per_image(index == k), layer(images, training=True), out)
        return out

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_}


@register
class RandomSubset(_Choice):
    """albumentations' SomeOf (replace=False): n of `layers` per image, chosen uniformly without replacement,
    applied in their listed order, each still subject to its own probability (wrap it in RandomApply)."""

    def __init__(self, layers, n: int, **kwargs):
        super().__init__(layers, **kwargs)
        self.n = int(n)

    def augment(self, images):
        # The n smallest of K uniform keys are a uniform n-subset.
        keys = self._uniform((as_batch(images), len(self.choices)))
        ranks = ops.argsort(ops.argsort(keys, axis=1), axis=1)
        out = images
        for k, layer in enumerate(self.choices):
            out = ops.where(per_image(ranks[:, k] < self.n), layer(out, training=True), out)
        return out

    def get_config(self):
        return {**super().get_config(), "n": self.n}


@register
class RandomShear(Augmentation):
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
        s = self._uniform((as_batch(images),), -self.shear_range, self.shear_range) * (math.pi / 180)
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


@register
class RandomScaleShift(Augmentation):
    """x * a + b, clipped to [0, 1], with a and b uniform per image. ImageDataGenerator's brightness_range is
    (a in range, b = 0); albumentations' RandomBrightnessContrast is a = 1 + contrast, b = brightness.
    keras.layers.RandomBrightness adds only, and keras.layers.RandomContrast scales about each channel's mean
    where albumentations scales about 0, so neither reproduces these."""

    def __init__(self, scale_range=(1.0, 1.0), offset_range=(0.0, 0.0), **kwargs):
        super().__init__(**kwargs)
        self.scale_range = tuple(float(v) for v in scale_range)
        self.offset_range = tuple(float(v) for v in offset_range)

    def augment(self, images):
        batch = as_batch(images)
        scale = per_image(self._uniform((batch,), *self.scale_range))
        offset = per_image(self._uniform((batch,), *self.offset_range))
        return ops.clip(images * scale + offset, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "scale_range": self.scale_range, "offset_range": self.offset_range}




@register
class RandomResizedCrop(Augmentation):
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
        batch, height, width = as_batch(images), images.shape[1], images.shape[2]
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
