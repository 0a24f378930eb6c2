"""Keras layers that change pixel values as the host policy does (`augmentation.placement=device`): channel shift,
Gaussian noise, colour jitter, coarse dropout, and RandAugment with its operations drawn per image. Same conventions
as ablation.augment.layers (images in [0, 1], identity outside training)."""
from __future__ import annotations

import keras
from keras import ops

from ablation.augment.layers import Augmentation, as_batch, per_image, register
from ablation.core import compat

# ITU-R 601 luma, as cv2.COLOR_RGB2GRAY (albumentations' ColorJitter uses it for contrast and saturation).
LUMA = (0.299, 0.587, 0.114)



@register
class RandomChannelShift(Augmentation):
    """ImageDataGenerator's channel_shift_range: one intensity uniform in (-r, r) added to every channel, clipped
    to the image's own min and max (augment.KerasChannelShift on the host). No Keras layer does this."""

    def __init__(self, intensity: float, **kwargs):
        super().__init__(**kwargs)
        self.intensity = float(intensity)

    def augment(self, images):
        shift = per_image(self._uniform((as_batch(images),), -self.intensity, self.intensity))
        low = ops.min(images, axis=(1, 2, 3), keepdims=True)
        high = ops.max(images, axis=(1, 2, 3), keepdims=True)
        return ops.minimum(ops.maximum(images + shift, low), high)

    def get_config(self):
        return {**super().get_config(), "intensity": self.intensity}


@register
class RandomGaussNoise(Augmentation):
    """albumentations' GaussNoise: per image a standard deviation uniform in std_range and a mean uniform in
    mean_range (fractions of the intensity range), noise per pixel (and per channel), clipped to [0, 1].
    keras.layers.GaussianNoise has one fixed stddev and does not clip."""

    def __init__(self, std_range, mean_range=(0.0, 0.0), per_channel: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.std_range = tuple(float(v) for v in std_range)
        self.mean_range = tuple(float(v) for v in mean_range)
        self.per_channel = bool(per_channel)

    def augment(self, images):
        batch = as_batch(images)
        std = per_image(self._uniform((batch,), *self.std_range))
        mean = per_image(self._uniform((batch,), *self.mean_range))
        channels = images.shape[3] if self.per_channel else 1
        noise = keras.random.normal((batch, images.shape[1], images.shape[2], channels), dtype=self.compute_dtype,
                                    seed=self.generator)
        return ops.clip(images + noise * std + mean, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "std_range": self.std_range, "mean_range": self.mean_range,
                "per_channel": self.per_channel}


@register
class ColorJitter(Augmentation):
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
        batch = as_batch(images)
        factors = [per_image(self._uniform((batch,), *r))
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
                    stepped = ops.where(per_image(order[:, step] == i), op(out, factors[i]), stepped)
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




@register
class CoarseDropout(Augmentation):
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
        batch, height, width = as_batch(images), images.shape[1], images.shape[2]
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


@register
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
            (self.num_ops, batch), 0, compat.randaugment_operation_count(self),
            seed=compat.randaugment_seed_generator(self))
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
