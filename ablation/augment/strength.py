"""Augmentation strength: a policy with every magnitude scaled by one number s (`augmentation.strength`), the
dose of a dose-response design (design=strength). Three rules cover every magnitude a policy may hold:

    x s   an amount that is zero when nothing changes (degrees, shift and shear ranges, noise std, hole sizes,
          brightness/contrast/hue amounts, MixUp alpha, RandAugment factor): multiplied by s;
    ^ s   a factor range around 1 ([low, high] of a zoom, scale, brightness factor, crop area or aspect
          ratio): raised to the power s, so s = 0 gives exactly 1 and every level stays positive;
    p x s a transform whose only magnitude is how often it acts (flips, transposes, 90-degree turns): its
          probability multiplied by s, at most 1.

A value pushed past its valid range (a shift fraction past 1, a hole larger than the image) is refused, naming
the key and the strength; strength 0 is `none` itself. Transforms with no magnitude (CLAHE, ToGray, Equalize...)
and ImageDataGenerator flips (Keras flips half the images, always) are refused by name: a dose of them means
nothing. The table of what scales is MAGNITUDES (and docs/augmentations.md)."""
from __future__ import annotations

import inspect
import math

from ablation.augment.checks import ROOT_KEY, PolicyError, fail, is_number
from ablation.augment.mixing import KINDS
from ablation.augment.parse import resolve_target

TIMES, POWER, CHANCE = "x s", "^ s", "p x s"
# The magnitudes of each transform, by class name: argument -> (rule, the largest value it may reach or None).
MAGNITUDES: dict[str, dict[str, tuple[str, float | None]]] = {
    "Rotate": {"limit": (TIMES, 180)},
    "SafeRotate": {"limit": (TIMES, 180)},
    "Affine": {"rotate": (TIMES, 180), "shear": (TIMES, 89), "translate_percent": (TIMES, 1), "scale": (POWER, None)},
    "ShiftScaleRotate": {"shift_limit": (TIMES, 1), "scale_limit": (TIMES, None), "rotate_limit": (TIMES, 180)},
    "Perspective": {"scale": (TIMES, 1)},
    "GaussNoise": {"std_range": (TIMES, 1), "mean_range": (TIMES, 1)},
    "ISONoise": {"intensity": (TIMES, None)},
    "RandomBrightnessContrast": {"brightness_limit": (TIMES, None), "contrast_limit": (TIMES, None)},
    "ColorJitter": {"brightness": (TIMES, None), "contrast": (TIMES, None), "saturation": (TIMES, None),
                    "hue": (TIMES, 0.5)},
    "HueSaturationValue": {"hue_shift_limit": (TIMES, 180), "sat_shift_limit": (TIMES, 255),
                           "val_shift_limit": (TIMES, 255)},
    "CoarseDropout": {"hole_height_range": (TIMES, 1), "hole_width_range": (TIMES, 1)},
    "RandomResizedCrop": {"scale": (POWER, None), "ratio": (POWER, None)},
    "RandAugment": {"factor": (TIMES, 1)},
    "HorizontalFlip": {"p": (CHANCE, 1)}, "VerticalFlip": {"p": (CHANCE, 1)}, "Transpose": {"p": (CHANCE, 1)},
    "RandomRotate90": {"p": (CHANCE, 1)}, "D4": {"p": (CHANCE, 1)},
}
# ColorJitter's amounts as pairs are factor ranges around 1, not amounts.
PAIRS_AROUND_ONE = {("ColorJitter", "brightness"), ("ColorJitter", "contrast"), ("ColorJitter", "saturation")}
# The ImageDataGenerator vocabulary: rotation in degrees, shifts and zoom as fractions (>= 1: pixels), shear in
# degrees, channel shift in intensity levels, brightness as a factor range.
IDG_MAGNITUDES: dict[str, tuple[str, float | None]] = {
    "rotation_range": (TIMES, 180), "width_shift_range": (TIMES, None), "height_shift_range": (TIMES, None),
    "shear_range": (TIMES, 89), "zoom_range": (TIMES, None), "channel_shift_range": (TIMES, 255),
    "brightness_range": (POWER, None)}
IDG_FLIPS = ("horizontal_flip", "vertical_flip")
CONTAINERS = ("OneOf", "SomeOf", "Sequential", "RandomOrder", "OneOrOther")
MIX_AMOUNTS = {"mixup": "alpha", "cutmix": "factor"}


def label(strength: float) -> str:
    """`rotate@0.5`: the suffix a level adds to the policy's name."""
    return f"@{strength:g}"


def check(value) -> float:
    if not is_number(value) or value < 0:
        raise fail(f"{ROOT_KEY}.strength", f"expected a number >= 0 (1 = the policy as written), got {value!r}")
    return float(value)


def scale(cfg: dict, name: str, strength) -> tuple[dict, str]:
    """The policy config with every magnitude scaled to `strength`, and its name `<name>@<strength>`."""
    s = check(strength)
    out = {k: v for k, v in cfg.items() if k not in ("idg", "transforms", "mix")}
    if s == 0:  # nothing changes any image: none itself, under its own name
        out.update(idg=None, transforms=[], mix=None)
        return out, name + label(s)
    idg = cfg.get("idg") or {}
    out["idg"] = {k: _idg(k, v, s) for k, v in idg.items()} or None
    out["transforms"] = [_transform(t, f"{ROOT_KEY}.transforms[{i}]", s)
                         for i, t in enumerate(cfg.get("transforms") or [])]
    out["mix"] = _mix(cfg.get("mix"), s)
    return out, name + label(s)


def _idg(key: str, value, s: float):
    path = f"{ROOT_KEY}.idg.{key}"
    if key in IDG_FLIPS and value:
        raise fail(path, "has no magnitude to scale (Keras flips half the images, always); to dose a flip, write "
                         "it as albumentations.HorizontalFlip / VerticalFlip, whose probability scales")
    if key not in IDG_MAGNITUDES or value in (None, False):
        return value
    rule, top = IDG_MAGNITUDES[key]
    if key in ("width_shift_range", "height_shift_range", "zoom_range") and is_number(value) and value < 1:
        top = 0.999  # a fraction must stay one (>= 1 means pixels; a zoom of 1 is a point)
    if key == "zoom_range" and not is_number(value):
        rule = POWER  # [lower, upper]: a factor range around 1
    return _scaled(value, rule, top, s, path)


def _transform(item, path: str, s: float):
    if not isinstance(item, dict):
        return item  # the policy's own checks name it
    cls = str(item.get("_target_", "?")).rpartition(".")[2]
    if cls in CONTAINERS:
        children = item.get("transforms") or []
        return {**item, "transforms": [_transform(c, f"{path}.transforms[{i}]", s) for i, c in enumerate(children)]}
    if cls not in MAGNITUDES:
        raise fail(path, f"{item.get('_target_')} has no magnitude the strength design can scale; transforms "
                         f"that have one: {', '.join(sorted(MAGNITUDES))}")
    out = dict(item)
    for arg, (rule, top) in MAGNITUDES[cls].items():
        value = item[arg] if arg in item else _default(item.get("_target_"), arg)
        if value is None:
            continue
        if (cls, arg) in PAIRS_AROUND_ONE and not is_number(value):
            rule = POWER
        out[arg] = _scaled(value, rule, top, s, f"{path}.{arg}")
    return out


def _default(target, arg):
    """The transform's own default of an argument the policy leaves out (albumentations' signature)."""
    try:
        parameter = inspect.signature(resolve_target(target, ROOT_KEY).__init__).parameters.get(arg)
    except PolicyError:  # an unknown target: the policy's own checks name it
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _mix(mix, s: float):
    if not isinstance(mix, dict) or mix.get("kind") not in MIX_AMOUNTS:
        return mix  # absent, or wrong in a way the policy's own checks name
    key = MIX_AMOUNTS[mix["kind"]]
    amount = mix.get(key, KINDS[mix["kind"]][1])
    return {**mix, key: _scaled(amount, TIMES, None, s, f"{ROOT_KEY}.mix.{key}")}


def _scaled(value, rule: str, top, s: float, path: str):
    """value (a number, a pair, or a mapping of them: Affine's {x, y}) scaled by one rule."""
    if isinstance(value, dict):
        return {k: _scaled(v, rule, top, s, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scaled(v, rule, top, s, path) for v in value]
    if not is_number(value):
        return value  # the policy's own checks name it
    if rule == CHANCE:
        return min(1.0, value * s)
    if rule == POWER:
        if value <= 0:
            raise fail(path, f"expected factors > 0 to raise to the power of the strength, got {value!r}")
        return float(value ** s)
    out = value * s
    if top is not None and abs(out) > top:
        raise fail(path, f"{value!r} at strength {s:g} is {out:g}, past its largest valid value {top:g}; "
                         "use lower levels")
    return int(out) if isinstance(value, int) and float(out).is_integer() and not math.isinf(out) else out
