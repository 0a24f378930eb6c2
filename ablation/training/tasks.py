"""Tasks: what the model learns to output from the dataset's images (the `task` group: task=classify|reconstruct|
inpaint, ablation/conf/task/; its name is task.name).

classify     the class; the labels come with the dataset. Cross-entropy loss, accuracy.
reconstruct  the input image itself (an autoencoder; Keras' class_mode='input'): the target is the very image the
             model sees, augmentation included.
inpaint      the original image, from a copy with a region masked out (`task.mask`: a rectangle or an ellipse
             placed by task.center_y/center_x/height/width, or a mask image file). In training the policy's
             spatial transforms move the image, its target and its mask alike and its photometric ones change the
             model's input only (augment.Policy.split); then the masked pixels of the input are set to
             `task.fill`. Validation, test and the clean training subset are never augmented and get one fixed
             mask per image (seeded), so they are the same every epoch.

Image targets are float32 on the [0, 1] scale of the model's sigmoid output (uint8 / 255). Their loss is the mean
squared error; their metrics mae (mean absolute error) and psnr (peak signal-to-noise ratio in dB, peak 1.0). All
three are computed per image, so a sample weight (Batches' padding) weighs a whole image.

Batches calls `task.batch(images, labels, index, policy, rng)` for every batch: uint8 images in, (model input,
target) out; rng is None for evaluation batches.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import keras
import numpy as np
from keras import ops
from omegaconf import DictConfig, OmegaConf

from ablation.core.errors import ConfigError

TASKS = ("classify", "reconstruct", "inpaint")
SHAPES = ("rectangle", "ellipse")
# Where a generated mask lies, as fractions of the image: its centre and its size.
REGION = ("center_y", "center_x", "height", "width")
INPAINT_KEYS = ("mask", *REGION, "fill")
# Seeds the fixed evaluation masks, (seed, image index, EVAL_MASKS), apart from the training batches' streams.
EVAL_MASKS = 0x6D61736B
PSNR_CAP_MSE = 1e-10  # a perfect output scores 100 dB instead of infinity

_register = keras.saving.register_keras_serializable(package="ablation")


# --------------------------------------------------------------------------------------------------------------
# Loss and metrics of the image tasks, on keras.ops; one value per image.

def _per_image(values):
    return ops.mean(values, axis=tuple(range(1, len(values.shape))))


def _difference(y_true, y_pred):
    return ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")


@_register
def mse(y_true, y_pred):
    """Mean squared error per image."""
    return _per_image(ops.square(_difference(y_true, y_pred)))


@_register
def mae(y_true, y_pred):
    """Mean absolute error per image."""
    return _per_image(ops.abs(_difference(y_true, y_pred)))


@_register
def psnr(y_true, y_pred, max_val: float = 1.0):
    """Peak signal-to-noise ratio per image, in dB: 10 log10(max_val^2 / mse); keras.metrics has no PSNR class."""
    return 10.0 * ops.log10(max_val ** 2 / ops.maximum(mse(y_true, y_pred), PSNR_CAP_MSE))


def as_target(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1], the scale of the model's input after its rescale and of its output."""
    return np.asarray(images, np.float32) * np.float32(1 / 255)


# --------------------------------------------------------------------------------------------------------------

class Classify:
    name = "classify"
    headline = "accuracy"  # the test metric a run's log line names

    def loss(self, num_classes: int):
        from ablation.training.models import loss_for

        return loss_for(num_classes)

    def metrics(self) -> list:
        return ["accuracy"]

    def batch(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray, policy, rng):
        if policy is not None and rng is not None:
            images = policy.augment_batch(images, rng)
        return images, labels


class Reconstruct(Classify):
    name = "reconstruct"
    headline = "psnr"

    def loss(self, num_classes: int):
        return mse

    def metrics(self) -> list:
        return [mae, psnr]

    def batch(self, images, labels, index, policy, rng):
        if policy is not None and rng is not None:
            images = policy.augment_batch(images, rng)
        return images, as_target(images)


class Inpaint(Reconstruct):
    """mask: rectangle|ellipse (drawn per image from `region`) or a mask image (white = masked, resized to the
    images, the same for every image). region: REGION -> a fraction or a (low, high) range drawn per image."""

    name = "inpaint"

    def __init__(self, mask: str, region: dict, fill: int, seed: int):
        self.mask = mask
        self.region = region
        self.fill = np.uint8(fill)
        self.seed = seed
        self._file = None if mask in SHAPES else _read_mask(Path(mask).expanduser(), "task.mask")
        self._resized: dict[tuple[int, int], np.ndarray] = {}

    def masks(self, count: int, shape: tuple[int, int], index, rng: np.random.Generator | None) -> np.ndarray:
        """(count, H, W) uint8, 1 = masked. rng: training (a fresh region per image and epoch); None: evaluation,
        one fixed region per image, from (seed, its index)."""
        if self._file is not None:
            return np.repeat(self._file_mask(shape)[None], count, axis=0)
        rngs = ([rng] * count if rng is not None
                else [np.random.default_rng([self.seed, int(i), EVAL_MASKS]) for i in index])
        return np.stack([self._draw(g, *shape) for g in rngs])

    def pairs(self, images: np.ndarray, index, policy, rng):
        """(model inputs uint8, targets uint8, masks) for a batch of original images."""
        masks = self.masks(len(images), images.shape[1:3], index, rng)
        targets = inputs = images
        if policy is not None and rng is not None:
            spatial, photometric = policy.split()
            targets, masks = spatial.augment_batch(images, rng, masks=masks)
            inputs = photometric.augment_batch(targets, rng)
        inputs = np.where(masks[..., None] > 0, self.fill, inputs)
        return inputs, targets, masks

    def batch(self, images, labels, index, policy, rng):
        inputs, targets, _ = self.pairs(images, index, policy, rng)
        return inputs, as_target(targets)

    def _draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        value = {k: rng.uniform(*v) if isinstance(v, tuple) else v for k, v in self.region.items()}
        cy, cx = value["center_y"] * height, value["center_x"] * width
        ry, rx = max(value["height"] * height / 2, 0.5), max(value["width"] * width / 2, 0.5)
        y, x = np.ogrid[:height, :width]
        dy, dx = (y + 0.5 - cy) / ry, (x + 0.5 - cx) / rx  # pixel centres, in radii from the region's centre
        inside = (dy ** 2 + dx ** 2 <= 1) if self.mask == "ellipse" else (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
        if not inside.any():  # a region smaller than a pixel still masks the pixel it lies in
            inside[min(int(cy), height - 1), min(int(cx), width - 1)] = True
        return inside.astype(np.uint8)

    def _file_mask(self, shape: tuple[int, int]) -> np.ndarray:
        shape = tuple(shape)
        if shape not in self._resized:
            resized = cv2.resize(self._file, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
            if not resized.any():
                raise ConfigError(f"task.mask: {self.mask} masks no pixel once resized to {shape[0]}x{shape[1]}")
            self._resized[shape] = resized
        return self._resized[shape]


CLASSIFY = Classify()


def _read_mask(path: Path, key: str) -> np.ndarray:
    """A mask image as (H, W) uint8, 1 where the image is light (> 127 of 255, after conversion to gray)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ConfigError(f"{key}: expected {'|'.join(SHAPES)} or the path of a mask image; "
                          f"no file {str(path)!r}")
    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"), np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"{key}: {path}: cannot decode the mask image ({' '.join(str(exc).split())})") from None
    mask = (gray > 127).astype(np.uint8)
    if not mask.any():
        raise ConfigError(f"{key}: {path} masks nothing; white (> 127) marks the pixels to mask")
    return mask


# --------------------------------------------------------------------------------------------------------------
# Config

def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _fraction_or_range(key: str, value, positive: bool):
    what = "in (0, 1]" if positive else "in [0, 1]"

    def ok(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (0 < v <= 1 if positive else 0 <= v <= 1))

    if ok(value):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(ok, value)) and value[0] <= value[1]:
        return float(value[0]), float(value[1])
    raise ConfigError(f"{key}: expected a fraction of the image {what} or a range [low, high] of such fractions "
                      f"with low <= high, got {_plain(value)!r}")


def inpaint_settings(node) -> tuple[str, dict, int]:
    """The `task` node of task=inpaint (its name aside) -> (mask, region, fill); ConfigError naming the key
    otherwise."""
    node = _plain(node)
    if not isinstance(node, dict):
        raise ConfigError(f"task: expected a mapping with name and {', '.join(INPAINT_KEYS)}, got {node!r}")
    node = {k: v for k, v in node.items() if k != "name"}
    for key in node:
        if key not in INPAINT_KEYS:
            raise ConfigError(f"task.{key}: unknown key; expected {', '.join(INPAINT_KEYS)}")
    mask = node.get("mask", "rectangle")
    if not isinstance(mask, str) or not mask:
        raise ConfigError(f"task.mask: expected {'|'.join(SHAPES)} or the path of a mask image, got {mask!r}")
    region = {}
    if mask in SHAPES:
        for key in REGION:
            if key not in node:
                raise ConfigError(f"task.{key}: required for a {mask} mask (a fraction of the image or [low, high])")
            region[key] = _fraction_or_range(f"task.{key}", node[key], positive=key in ("height", "width"))
    else:
        _read_mask(Path(mask).expanduser(), "task.mask")
    fill = node.get("fill", 0)
    if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
        raise ConfigError(f"task.fill: expected the masked pixels' value, an integer in [0, 255], got {fill!r}")
    return mask, region, fill


def check(cfg: DictConfig) -> None:
    """`task` and its own settings; what a task asks of the model, the trainer and the augmentation is checked
    with the other rules between settings (ablation.training.plan)."""
    task = name_of(cfg)
    if task not in TASKS:
        raise ConfigError(f"task.name: expected one of {'|'.join(TASKS)} (task=NAME picks ablation/conf/task/NAME.yaml), "
                          f"got {task!r}")
    if task == "inpaint":
        inpaint_settings(cfg.get("task"))
    elif any(key != "name" for key in cfg.get("task") or {}):
        extra = next(key for key in cfg.task if key != "name")
        raise ConfigError(f"task.{extra}: a setting of task=inpaint; task {task} has none")


def name_of(cfg: DictConfig) -> str:
    """The run's task: task.name (classify when the config has no task group)."""
    return OmegaConf.select(cfg, "task.name", default="classify")


def build(cfg: DictConfig) -> Classify:
    """The run's task object (for Batches, the loss and the metrics); cfg already checked."""
    task = name_of(cfg)
    if task == "classify":
        return CLASSIFY
    if task == "reconstruct":
        return Reconstruct()
    mask, region, fill = inpaint_settings(cfg.get("task"))
    return Inpaint(mask, region, fill, seed=cfg.seed)


# task name -> its class (for what a class tells without building the task, e.g. its headline metric)
KINDS = {"classify": Classify, "reconstruct": Reconstruct, "inpaint": Inpaint}
