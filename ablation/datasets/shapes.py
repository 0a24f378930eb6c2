"""The `shapes` source: coloured shapes drawn on the fly, narrow in training and wide in evaluation along the axes
augmentation covers (shift, rotate, scale, hue; brightness), so each augmentation's effect shows; nothing to download.

No Keras, no MLflow.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ablation.datasets.common import Split, Splits, common_args, fail, integer_arg, interval, number, to_channels

SHAPES = ("circle", "square", "triangle", "star", "cross")
# Axes that measurably hurt a CNN trained on the narrow range (brightness does not, so it is not among them).
SHAPE_AXES = ("shift", "rotate", "scale", "hue")


@dataclass(frozen=True)
class ShapesSettings:
    """The `dataset=shapes` settings (conf/dataset/shapes.yaml); see load_shapes."""
    image_size: int = 32
    channels: int = 3
    classes: list[str] = ("circle", "square", "triangle", "cross")
    n_train: int = 600
    n_val: int = 300
    n_test: int = 300
    train_shift: float = 0.1
    train_rotate_range: list[float] = (-10.0, 10.0)
    train_scale_range: list[float] = (0.3, 0.34)
    train_brightness_range: list[float] = (0.8, 1.0)
    train_hue_range: list[float] = (0.0, 40.0)
    eval_shift: float = 1.0
    eval_rotate_range: list[float] = (-180.0, 180.0)
    eval_scale_range: list[float] = (0.18, 0.42)
    eval_brightness_range: list[float] = (0.2, 1.0)
    eval_hue_range: list[float] = (0.0, 360.0)
    eval_wide_axes: int = 1
    split_seed: int = 0


def load_shapes(settings: ShapesSettings) -> Splits:
    """Coloured shapes drawn on the fly. Training images vary little along four axes (centred, upright, one size,
    warm colours); each validation/test image leaves that range on `eval_wide_axes` of them, chosen at random,
    so a model trained without augmentation fails on part of them and each geometric or photometric
    augmentation wins back the part it covers. Brightness is narrow in training and always wide in evaluation,
    though a CNN hardly notices it (measured: accuracy 1.00 on brightness-only shifted images without augmentation).

    shift: how far the centre may move, as a fraction of the room that keeps the shape inside the frame.
    rotate: degrees. scale: circumradius as a fraction of image_size. brightness: factor on the whole image.
    hue: the shape's colour on the colour wheel, in degrees (0 red, 120 green, 240 blue).
    """
    o = settings
    narrow = dict(shift=o.train_shift, rotate=o.train_rotate_range, scale=o.train_scale_range,
                  brightness=o.train_brightness_range, hue=o.train_hue_range)
    wide = dict(shift=o.eval_shift, rotate=o.eval_rotate_range, scale=o.eval_scale_range,
                brightness=o.eval_brightness_range, hue=o.eval_hue_range)
    parts = []
    for index, (n, wide_axes) in enumerate([(o.n_train, 0), (o.n_val, o.eval_wide_axes),
                                            (o.n_test, o.eval_wide_axes)]):
        # One stream per split, so the validation and test images stay the same when n_train changes.
        rng = np.random.default_rng([o.split_seed, index])
        x, y = _draw_shapes(rng, n, list(o.classes), o.image_size, narrow, wide, wide_axes)
        parts.append(Split(to_channels(x, o.channels), y))
    return Splits(*parts, class_names=list(o.classes))


def _draw_shapes(rng, n, classes, size, narrow, wide, wide_axes):
    y = rng.permutation(np.arange(n) % len(classes)).astype(np.int64)  # balanced classes
    # Exactly `wide_axes` axes per image take the wide range. All at once would leave a model that lacks any
    # one augmentation near chance, hiding what each augmentation contributes.
    is_wide = rng.random((n, len(SHAPE_AXES))).argsort(axis=1) < wide_axes
    is_wide = np.concatenate([is_wide, np.full((n, 1), wide_axes > 0)], axis=1)  # brightness: wide in evaluation

    def sample(axis, draw):
        return np.where(is_wide[:, (*SHAPE_AXES, "brightness").index(axis)], draw(wide[axis]), draw(narrow[axis]))

    uniform = lambda bounds: rng.uniform(*bounds, n)
    radius = sample("scale", uniform) * size
    middle = (size - 1) / 2
    room = np.maximum(middle - radius, 0.0)
    centre = middle + (sample("shift", lambda v: np.full(n, float(v))) * room)[:, None] * rng.uniform(-1, 1, (n, 2))
    angle = np.deg2rad(sample("rotate", uniform))
    factor = sample("brightness", uniform).astype(np.float32)
    hues = (sample("hue", uniform) / 360.0) % 1.0
    colour = [colorsys.hsv_to_rgb(h, s, 1.0) for h, s in zip(hues, rng.uniform(0.6, 1.0, n))]
    background = rng.uniform(0, 60, n)
    noise = rng.normal(0, 6, (n, size, size, 3)).astype(np.float32)

    canvas = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        canvas[i] = int(background[i])
        rgb = tuple(int(255 * c) for c in colour[i])
        shape = classes[y[i]]
        if shape == "circle":
            centre_fixed = tuple(int(round(c * 16)) for c in centre[i])
            cv2.circle(canvas[i], centre_fixed, int(round(radius[i] * 16)), rgb, -1, cv2.LINE_AA, shift=4)
        else:
            points = _outline(shape) @ _rotation(angle[i]).T * radius[i] + centre[i]
            cv2.fillPoly(canvas[i], [np.rint(points * 16).astype(np.int32)], rgb, cv2.LINE_AA, shift=4)
    # Noise and brightness apply to the whole image, as a camera's would.
    images = (canvas.astype(np.float32) + noise) * factor[:, None, None, None]
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), y


def _outline(shape: str) -> np.ndarray:
    """Upright polygon with circumradius 1, (x, y) in image coordinates (y grows downwards)."""
    def ring(count, start_deg, radii=(1.0,)):
        t = np.deg2rad(start_deg + np.arange(count) * 360 / count)
        r = np.resize(np.asarray(radii), count)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)

    if shape == "square":
        return ring(4, 45)
    if shape == "triangle":
        return ring(3, -90)
    if shape == "star":
        return ring(10, -90, radii=(1.0, 0.42))
    if shape == "cross":
        w, a = 0.3, math.sqrt(1 - 0.3 ** 2)  # arm half-width and length, so the corners touch the unit circle
        return np.array([(w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a),
                         (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a)])
    raise ValueError(shape)


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def check_shapes(args):
    common_args(args, train_size=False)
    classes = args.get("classes")
    if (not isinstance(classes, (list, tuple)) or len(classes) < 2 or len(set(classes)) != len(classes)
            or any(c not in SHAPES for c in classes)):
        raise fail("classes", f"expected two or more distinct shapes from {', '.join(SHAPES)}, got {classes!r}")
    integer_arg(args, "n_train", 1)
    integer_arg(args, "n_val", 0)
    integer_arg(args, "n_test", 0)
    integer_arg(args, "eval_wide_axes", 0)
    if args["eval_wide_axes"] > len(SHAPE_AXES):
        raise fail("eval_wide_axes", f"expected 0..{len(SHAPE_AXES)} ({', '.join(SHAPE_AXES)}), "
                                      f"got {args['eval_wide_axes']}")
    for prefix in ("train", "eval"):
        shift = args.get(f"{prefix}_shift")
        if not number(shift) or not 0 <= shift <= 1:
            raise fail(f"{prefix}_shift", f"expected a fraction in [0, 1] of the room around the shape, got {shift!r}")
        interval(args, f"{prefix}_rotate_range", -360, 360)
        interval(args, f"{prefix}_scale_range", 0, 0.5, positive=True)
        interval(args, f"{prefix}_brightness_range", 0, 4, positive=True)
        interval(args, f"{prefix}_hue_range", -360, 720)
