"""Device-side augmentation (`augmentation.placement=device`): the same policy as `augment.build` makes for the host,
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

import keras
import numpy as np

from ablation.augment import strength as scaling
from ablation.augment.checks import ROOT_KEY, PolicyError, plain, zoom_bounds
from ablation.augment.layers import (
    Flip,
    RandomApply,
    RandomChoice,
    RandomResizedCrop,
    RandomScaleShift,
    RandomShear,
    RandomSubset,
)
from ablation.augment.pixel_layers import CoarseDropout, ColorJitter, RandAugment, RandomChannelShift, RandomGaussNoise
from ablation.augment.policy import build
from ablation.augment.units import apply_variant

HOST = f"use {ROOT_KEY}.placement=host"
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
        low, high = zoom_bounds(idg.get("zoom_range", 0.0))
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

def layers_for(cfg, input_shape: tuple[int, int, int], seed: int) -> keras.Sequential | None:
    """The `augmentation` config node -> a Sequential of Keras layers that augments like the host policy does, or
    None for a policy that changes nothing. Raises PolicyError, one line naming the key and the transform, for a
    bad setting (the host's own checks, run first) or for a transform no Keras layer reproduces."""
    cfg = plain(cfg)
    input_shape = tuple(int(v) for v in input_shape)
    policy = build(cfg, image_shape=input_shape)
    if policy.is_identity:
        return None
    name = cfg["name"]
    transforms = list(cfg.get("transforms") or [])
    if cfg.get("variant"):
        original = transforms
        cfg, name = apply_variant(cfg, name, cfg["variant"])
        transforms = list(cfg.get("transforms") or [])
        # Error messages name the key in the file the user wrote, not in the variant's shortened list.
        indices = [next(i for i, item in enumerate(original) if item is kept) for kept in transforms]
    else:
        indices = list(range(len(transforms)))
    if cfg.get("strength") is not None:  # the same scaled magnitudes as the host's (build() checked them)
        cfg, name = scaling.scale(cfg, name, cfg["strength"])
        transforms = list(cfg.get("transforms") or [])

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

