"""What every policy is checked against: the keys and values a policy may hold, and the value checks shared by
the config parser and the Keras-compatible transforms. The checks raise ValueError("<arg>: <what is wrong>"), which
the parser turns into a PolicyError naming the full key."""
from __future__ import annotations

import math
import os

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
from albumentations.augmentations.dropout.transforms import BaseDropout
from omegaconf import DictConfig, ListConfig, OmegaConf

from ablation.core import errors

ROOT_KEY = "augmentation"
# placement, copies, save_format, save_prefix: where the policy is applied (per batch on the host or the device,
# or offline as a written training set, ablation/training/expansion.py); checked by ablation.training.config, not
# part of the policy itself. synthetic: a generator's images added to the training set
# (ablation/training/synthetic.py), checked there; part of the fingerprint.
TOP_LEVEL_KEYS = ("name", "transforms", "idg", "mix", "variant", "strength", "placement", "copies",
                  "save_format", "save_prefix", "synthetic")
# augmentation.placement: host (the training batches), device (Keras layers in the model), offline (a written
# expansion of the training set).
PLACES = ("host", "device", "offline")
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


PolicyError = errors.PolicyError  # raised throughout this package; defined with the other user errors
# The package policies name their own transforms by (`_target_: ablation.augment.KerasAffine`), whichever of its
# modules defines them; also the name albumentations records them by, so a policy's fingerprint stays the same.
PACKAGE = "ablation.augment"


def public_name(cls: type) -> str:
    return f"{PACKAGE}.{cls.__name__}"

# --------------------------------------------------------------------------------------------------------------
# Value checks shared by the config parser and the Keras-compatible transforms below. They raise ValueError
# "<arg>: ..." so the parser can prefix the config path.

def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(key: str, value, minimum: float | None = None):
    if not is_number(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ValueError(f"{key}: expected a number{bound}, got {value!r}")
    return value


def check_probability(key: str, value) -> float:
    if not is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{key}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def check_pair(key: str, value, what: str, valid) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(is_number, value))
            or not valid(*value)):
        raise ValueError(f"{key}: expected {what}, got {plain(value)!r}")
    return float(value[0]), float(value[1])


def zoom_bounds(value) -> tuple[float, float]:
    # Keras: a float z means [1 - z, 1 + z]; a pair is taken as is.
    if is_number(value):
        if not 0 <= value < 1:
            raise ValueError(f"zoom_range: expected a number in [0, 1) or a pair [lower, upper] with "
                             f"0 < lower <= upper, got {value!r}")
        return 1.0 - value, 1.0 + value
    return check_pair("zoom_range", value, "a number in [0, 1) or a pair [lower, upper] with 0 < lower <= upper",
                       lambda lo, hi: 0 < lo <= hi)


def check_fill_mode(value) -> str:
    if value not in FILL_MODES:
        raise ValueError(f"fill_mode: expected one of {'|'.join(FILL_MODES)}, got {value!r}")
    return value


def plain(value):
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def fail(key: str, message: str) -> PolicyError:
    return PolicyError(f"{key}: {message}")
