"""Parsing: a policy config -> a tree of Node (class + arguments), checked in full without image data; the
ImageDataGenerator vocabulary -> the same kind of nodes."""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any

# albumentations checks PyPI for a newer version on import: slow or hanging on offline machines.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
from albumentations.core.composition import BaseCompose
from albumentations.core.transforms_interface import BasicTransform
from pydantic import ValidationError

from ablation.augment.checks import (
    IDG_KEYS,
    INTERVAL_ARGS,
    NESTABLE,
    NOT_TRANSFORMS,
    PACKAGE,
    PLACEHOLDER_SIZE,
    POSITIVE_ARGS,
    ROOT_KEY,
    TARGET_PREFIXES,
    PolicyError,
    check_number,
    check_pair,
    check_probability,
    fail,
    is_number,
    plain,
    public_name,
)
from ablation.augment.idg import KerasAffine, KerasChannelShift

# --------------------------------------------------------------------------------------------------------------
# Parsing: config -> a tree of Node (class + arguments), checked in full without image data.

@dataclass
class Node:
    cls: type
    args: dict[str, Any]
    path: str                     # config key for error messages
    label: str                    # the `_target_` as the user wrote it
    children: list[Node] | None = None
    auto_size: bool = False       # `size` left out: filled with the image's (height, width) at call time
    arg_paths: dict[str, str] = field(default_factory=dict)  # argument -> config key, where it differs

    def walk(self):
        yield self
        for child in self.children or ():
            yield from child.walk()


def _checked(path: str, check, *args):
    """Run one of the value checks above; its "<arg>: ..." message becomes "<path>.<arg>: ..."."""
    try:
        return check(*args)
    except ValueError as e:
        raise PolicyError(f"{path}.{e}") from None


def parse_transforms(items, path: str) -> list[Node]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise fail(path, f"expected a list of transforms, got {items!r}")
    return [_parse_transform(item, f"{path}[{i}]") for i, item in enumerate(items)]


def resolve_target(target, path: str) -> type:
    key = f"{path}._target_"
    if not isinstance(target, str) or not target:
        raise fail(key, f"expected a class name such as 'albumentations.HorizontalFlip', got {target!r}")
    if target.startswith("keras."):
        raise fail(key, f"{target!r}: policies name albumentations transforms, not Keras layers; "
                         f"{ROOT_KEY}.placement=device runs the albumentations policy as Keras layers")
    if not target.startswith(TARGET_PREFIXES):
        raise fail(key, f"expected a transform from {' or '.join(TARGET_PREFIXES)}, got {target!r} "
                         f"(a policy cannot name other code)")
    module_name, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        hint = difflib.get_close_matches(attr, dir(A), n=1) if module_name == "albumentations" else []
        raise fail(key, f"{target!r} does not exist" + (f" (did you mean 'albumentations.{hint[0]}'?)" if hint
                                                          else "")) from None
    if not (inspect.isclass(cls) and issubclass(cls, (BasicTransform, BaseCompose))):
        raise fail(key, f"{target!r} is not an albumentations transform")
    if cls.__name__ in NOT_TRANSFORMS and cls.__module__.startswith("albumentations."):
        raise fail(key, f"{target!r} cannot be used: {NOT_TRANSFORMS[cls.__name__]}")
    if target.startswith("ablation.") and not cls.__module__.startswith(PACKAGE):
        raise fail(key, f"{target!r} is not a transform defined in {PACKAGE}")
    if issubclass(cls, BaseCompose) and cls.__name__ not in NESTABLE:
        raise fail(key, f"{target!r} cannot be nested; use one of {', '.join(NESTABLE)} (the policy itself is "
                         f"the Compose)")
    return cls


def _parse_transform(item, path: str) -> Node:
    if not isinstance(item, dict):
        raise fail(path, f"expected a mapping with a _target_, got {item!r}")
    if "_target_" not in item:
        raise fail(f"{path}._target_", "missing (e.g. _target_: albumentations.HorizontalFlip)")
    label = item["_target_"]
    cls = resolve_target(label, path)
    args = {k: v for k, v in item.items() if k != "_target_"}
    if "p" in args:
        _checked(path, check_probability, "p", args["p"])

    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for name in args:
            if name not in params or name in ("strict", "seed"):
                close = difflib.get_close_matches(name, [p for p in params if p != "strict"], n=1)
                raise fail(path, f"{label}: unexpected argument {name!r}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))

    for name, value in args.items():
        if name != "transforms":
            _check_argument(cls, label, f"{path}.{name}", name, value)
    if cls.__name__ == "CoarseDropout":
        _check_hole_units(cls, label, path, args)

    children = None
    if issubclass(cls, BaseCompose):
        if not args.get("transforms"):
            raise fail(f"{path}.transforms", f"{label} needs a non-empty list of transforms")
        children = parse_transforms(args.pop("transforms"), f"{path}.transforms")
        if cls.__name__ == "OneOf" and not sum(_probability_of(child) for child in children):
            # albumentations would divide by the sum of the weights (ZeroDivisionError).
            raise fail(f"{path}.transforms", f"{label}: every transform has p: 0, so none can be chosen; give one "
                                              f"a p above 0 or remove the {cls.__name__}")
        n = args.get("n", 1)
        if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n):
            raise fail(f"{path}.n", f"expected how many transforms to apply, an integer >= 1, got {n!r}")

    auto_size = False
    for name, param in params.items():
        required = param.default is param.empty and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        if required and name not in args and name != "transforms":
            if name == "size":
                auto_size = True  # e.g. RandomResizedCrop: output the input's size
            else:
                raise fail(path, f"{label}: missing required argument {name!r}")
    return Node(cls, args, path, label, children, auto_size)


def _check_argument(cls: type, label: str, key: str, name: str, value) -> None:
    """What albumentations' own validation lets through: true/false or a quoted number where a number belongs
    (pydantic reads true as 1 and "0.5" as 0.5), reversed intervals, and signs that mean nothing."""
    for kind, what in ((bool, "true/false"), (str, "a string")):
        if _contains(value, kind) and not _takes(cls, name, kind):
            raise fail(key, f"{label}: expected a number, not {what}, got {plain(value)!r}")
    if name.endswith(("_range", "_limit")) or name in INTERVAL_ARGS:
        for pair in _pairs(value):
            if pair[0] > pair[1]:
                raise fail(key, f"{label}: expected an interval [low, high] with low <= high, got {plain(value)!r}")
    if name in POSITIVE_ARGS.get(cls.__name__, ()):
        numbers = [v for pair in _pairs(value) for v in pair] + ([value] if is_number(value) else [])
        if isinstance(value, dict):
            numbers += [v for v in value.values() if is_number(v)]
        if any(v <= 0 for v in numbers):
            raise fail(key, f"{label}: expected values > 0, got {plain(value)!r}")


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
        raise fail(f"{path}.hole_width_range", f"{label}: in {unit}, as hole_height_range {plain(height)!r} is, "
                                                f"got {plain(width)!r} ({other}?)")


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
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value)):
        return [(value[0], value[1])]
    return []


def _probability_of(node: Node) -> float:
    """A parsed transform's p, its class's default where the config leaves it out (OneOf weighs by it)."""
    if "p" in node.args:
        return float(node.args["p"])
    default = inspect.signature(node.cls).parameters.get("p")
    return float(default.default) if default is not None and is_number(default.default) else 1.0


def _error_message(node: Node, exc: Exception) -> str:
    """One line that starts with the config key of the offending argument where it can be told."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else exc
    if isinstance(cause, ValidationError):
        err = cause.errors()[0]
        arg = err["loc"][0] if err["loc"] else None
        text = err["msg"].removeprefix("Value error, ")
        got = "" if " got " in text else f", got {plain(err.get('input'))!r}"
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


def _instantiate(node: Node, size: tuple[int, int]):
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


def make_compose(nodes: list[Node], size: tuple[int, int]) -> A.Compose:
    return A.Compose([_instantiate(node, size) for node in nodes])


# --------------------------------------------------------------------------------------------------------------
# The ImageDataGenerator vocabulary -> the same kind of nodes, in Keras' order of application:
# affine, channel shift, horizontal flip, vertical flip, brightness.

def idg_nodes(idg, path: str) -> list[Node]:
    if not isinstance(idg, dict):
        raise fail(path, f"expected a mapping of ImageDataGenerator arguments, got {idg!r}")
    for key in idg:
        if key not in IDG_KEYS:
            close = difflib.get_close_matches(str(key), IDG_KEYS, n=1)
            raise fail(f"{path}.{key}", "not a supported ImageDataGenerator argument"
                        + (f" (did you mean {close[0]!r}?)" if close else f"; supported: {', '.join(IDG_KEYS)}"))

    def node(cls, args, keys=None):
        arg_paths = {arg: f"{path}.{key}" for arg, key in (keys or {}).items()}
        label = public_name(cls) if cls.__module__.startswith(PACKAGE) else f"{cls.__module__}.{cls.__name__}"
        return Node(cls, args, path, label, arg_paths=arg_paths)

    nodes = []
    affine_keys = ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
                   "fill_mode", "cval")
    affine = node(KerasAffine, {k: idg[k] for k in affine_keys if k in idg})
    # Validated even when every range is zero, so a bad fill_mode is reported regardless.
    if not _instantiate(affine, PLACEHOLDER_SIZE).is_identity:
        nodes.append(affine)
    if "channel_shift_range" in idg:  # checked even when it adds nothing, so `false` or a string is reported
        _checked(path, check_number, "channel_shift_range", idg["channel_shift_range"], 0)
    if idg.get("channel_shift_range"):
        nodes.append(node(KerasChannelShift, {"channel_shift_range": idg["channel_shift_range"]}))
    for key, cls in (("horizontal_flip", A.HorizontalFlip), ("vertical_flip", A.VerticalFlip)):
        value = idg.get(key, False)
        if not isinstance(value, bool):
            raise fail(f"{path}.{key}", f"expected true or false, got {value!r}")
        if value:
            nodes.append(node(cls, {"p": 0.5}))  # Keras flips each image with probability 0.5
    if idg.get("brightness_range") is not None:
        low, high = _checked(path, check_pair, "brightness_range", idg["brightness_range"],
                             "a pair [lower, upper] with 0 <= lower <= upper", lambda lo, hi: 0 <= lo <= hi)
        # Keras multiplies by one factor per image (PIL's Brightness.enhance); MultiplicativeNoise with a single
        # multiplier for all pixels and channels is exactly that, clipped to [0, 255]. Keras truncates where this
        # rounds, so a pixel may differ by one level.
        nodes.append(node(A.MultiplicativeNoise, {"multiplier": (low, high), "per_channel": False,
                                                  "elementwise": False, "p": 1.0},
                          keys={"multiplier": "brightness_range"}))
    return nodes


# --------------------------------------------------------------------------------------------------------------


def parse_mix(value):
    from ablation.augment import mixing

    try:
        return mixing.parse(value)
    except mixing.MixError as e:
        raise PolicyError(str(e)) from None
