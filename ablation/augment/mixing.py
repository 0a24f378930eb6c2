"""Batch mixing (`augmentation.mix`): MixUp and CutMix blend each training image with another image of its batch,
and its label with that image's label, after the per-image transforms.

    mix: {kind: mixup, alpha: 0.2}     # keras.layers.MixUp: image a*x + (1-a)*x[j], a ~ Beta(alpha, alpha)
    mix: {kind: cutmix, factor: 1.0}   # keras.layers.CutMix: a box of x[j] pasted into x, label weights by area

The numbers are drawn on the host per batch, from the batch's own generator (so a batch depends only on
(seed, epoch, batch), as every other draw in ablation/training/batches.py), with Keras' distributions: MixUp draws one
weight per image from Beta(alpha, alpha); CutMix draws alpha ~ U(0, factor) once per batch, a weight per image
from Beta(alpha, alpha) and a box of sqrt(1 - weight) of each side at a uniform place; both pair image i with
image permutation[i]. The label weight of a CutMix image is the share of its pixels left its own, counted on
the pixel grid. Where the pixels are mixed follows `augmentation.placement`:

- host: Batches mixes the uint8 images (MixUp rounded to the nearest integer);
- device: the batch carries the drawn numbers to the model, whose train step mixes the images on the device
  with keras.layers.MixUp / keras.layers.CutMix (`transform_images`, given these numbers) before the forward
  pass; evaluation and prediction see plain images.

Either way the targets of a mixed batch are {labels, other, weight} (other: the partner's label; on the device
also the permutation and the CutMix boxes), and the model (MixingModel) computes the loss as
weight * loss(labels) + (1 - weight) * loss(other), which for cross-entropy is the loss of the mixed one-hot
label, so labels stay class indices and every metric and evaluation is unchanged. Training accuracy counts the
label with the larger weight. Batch mixing needs class labels: task=classify only.

Every number travels per image, so a batch split across devices stays consistent. With TensorFlow's
MirroredStrategy (trainer.devices > 1) each replica trains on its own share of the batch, so device mixing pairs
image i with image permutation[i] modulo the share's size; on one device, and on JAX (which sees the whole batch),
that is the permutation itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

KEY = "augmentation.mix"
# kind -> (its strength argument, Keras' default, the Keras layer)
KINDS = {"mixup": ("alpha", 0.2, "MixUp"), "cutmix": ("factor", 1.0, "CutMix")}


class MixError(ValueError):
    """A bad augmentation.mix setting; one line that starts with the key."""


@dataclass(frozen=True)
class Mix:
    kind: str
    amount: float  # MixUp's alpha or CutMix's factor

    @property
    def label(self) -> str:
        """The Keras layer's name (MixUp, CutMix): the unit name in leave-one-out designs."""
        return KINDS[self.kind][2]

    def to_dict(self) -> dict:
        return {"kind": self.kind, KINDS[self.kind][0]: self.amount}


def parse(value) -> Mix | None:
    """The `augmentation.mix` node (a mapping, or null for none) -> Mix; MixError naming the key otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MixError(f"{KEY}: expected a mapping such as {{kind: mixup, alpha: 0.2}}, got {value!r}")
    kind = value.get("kind")
    if kind not in KINDS:
        raise MixError(f"{KEY}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    argument, default, _ = KINDS[kind]
    unknown = sorted(set(value) - {"kind", argument})
    if unknown:
        raise MixError(f"{KEY}.{unknown[0]}: unknown for kind {kind}; its only setting is {argument}")
    amount = value.get(argument, default)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not np.isfinite(amount) or amount <= 0:
        raise MixError(f"{KEY}.{argument}: expected a number > 0, got {amount!r}")
    return Mix(kind, float(amount))


def draw(mix: Mix, count: int, height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The mixing numbers of one batch: permutation (int32), weight (float32: the share of each image's own
    label) and, for CutMix, box (int32 rows: top, bottom, left, right; bottom and right exclusive)."""
    permutation = rng.permutation(count).astype(np.int32)
    if mix.kind == "mixup":
        return {"permutation": permutation, "weight": rng.beta(mix.amount, mix.amount, count).astype(np.float32)}
    alpha = rng.uniform(0, mix.amount) + 1e-6
    lam = rng.beta(alpha, alpha, count)
    ratio = np.sqrt(1 - lam)
    sides = []
    for size in (height, width):
        length = ratio * size
        start = rng.uniform(0, 1, count) * (size - length)
        # the pixel rows (columns) r with start <= r < start + length, as keras.layers.CutMix's mask selects
        sides += [np.ceil(start), np.ceil(start + length)]
    box = np.clip(np.stack(sides, axis=1), 0, [height, height, width, width]).astype(np.int32)
    pasted = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
    weight = (1 - pasted / (height * width)).astype(np.float32)
    return {"permutation": permutation, "weight": weight, "box": box}


def mix_images(images: np.ndarray, numbers: dict[str, np.ndarray]) -> np.ndarray:
    """The host's mixing of a uint8 batch (B, H, W, C), into a new batch of the same dtype."""
    from ablation.augment.buffers import empty_batch

    other = images[numbers["permutation"]]
    out = empty_batch(images.shape, images.dtype)
    if "box" not in numbers:
        weight = numbers["weight"].reshape(-1, 1, 1, 1)
        np.rint(weight * images + (1 - weight) * other, out=out, casting="unsafe")
        return out
    out[...] = images
    for i, (top, bottom, left, right) in enumerate(numbers["box"]):
        out[i, top:bottom, left:right] = other[i, top:bottom, left:right]
    return out


def targets(labels: np.ndarray, numbers: dict[str, np.ndarray], on_device: bool = False) -> dict[str, np.ndarray]:
    """y of a mixed batch: the labels, each partner's label and the weight; for the device also the numbers
    that say which pixels to mix."""
    y = {"labels": labels, "other": labels[numbers["permutation"]], "weight": numbers["weight"]}
    if on_device:
        y.update({k: v for k, v in numbers.items() if k != "weight"})
    return y


def _cutmix_masks(images, box):
    """(B, H, W, C) bool: inside each image's box."""
    shape = ops.shape(images)
    rows = ops.reshape(ops.arange(shape[1], dtype="int32"), (1, -1, 1, 1))
    cols = ops.reshape(ops.arange(shape[2], dtype="int32"), (1, 1, -1, 1))
    top, bottom, left, right = (ops.reshape(box[:, i], (-1, 1, 1, 1)) for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return ops.broadcast_to(inside, shape)


def mix_on_device(images, y: dict, layers: dict):
    """The device's mixing of a batch, in the model's train step: keras.layers.MixUp / CutMix applied with the
    batch's drawn numbers; the result is rounded back to the images' dtype, as on the host. Returns (images, y);
    y's partner labels follow the pairing used (the permutation modulo the batch in hand: on one device the
    permutation itself, on a replica of a split batch a pairing within its share)."""
    numbers = y
    permutation = ops.mod(ops.cast(numbers["permutation"], "int32"), ops.shape(images)[0])
    y = {**y, "other": ops.take(y["labels"], permutation, axis=0)}
    if "box" not in numbers:
        mixed = layers["mixup"].transform_images(
            images, {"mix_weight": numbers["weight"], "permutation_order": permutation})
    else:
        box = ops.cast(numbers["box"], "int32")
        mixed = layers["cutmix"].transform_images(
            images, {"permutation_order": permutation, "batch_masks": _cutmix_masks(images, box),
                     "mix_weight": numbers["weight"]})
    mixed = ops.cast(ops.round(mixed), images.dtype) if "int" in str(images.dtype) else ops.cast(mixed, images.dtype)
    return mixed, y


def _mixed(y) -> bool:
    return isinstance(y, dict) and "weight" in y


class MixingModel(keras.Model):
    """A functional model that trains on mixed batches (targets {labels, other, weight, ...}); with
    `mix_on_device` it also mixes the images in its train step. Batches with plain labels (evaluation, or a
    policy without mix) take the ordinary path. `plain(model)` is the same model as a keras.Model, for saving."""

    def __init__(self, *args, mix_on_device: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.mix_on_device = mix_on_device
        # Used for their transform_images only (no weights, no random state of their own).
        self._mixers = {"mixup": keras.layers.MixUp(), "cutmix": keras.layers.CutMix()}

    def train_step(self, *args):
        # TensorFlow: train_step(data); JAX: train_step(state, data). Either way the data come last.
        *state, data = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.mix_on_device and _mixed(y):
            x, y = mix_on_device(x, y, self._mixers)
        data = (x, y) if sample_weight is None else (x, y, sample_weight)
        return super().train_step(*state, data)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not _mixed(y):
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        # weight * loss(labels) + (1 - weight) * loss(other), per image, as one weighted loss over the batch
        # twice: the sum over 2B rows with weights 2w, 2(1 - w) divided by 2B is that mean over B.
        weight = ops.cast(y["weight"], "float32")
        given = ops.ones_like(weight) if sample_weight is None else ops.cast(sample_weight, "float32")
        labels, other = y["labels"], y["other"]
        return super().compute_loss(
            x=x, y=ops.concatenate([labels, other], axis=0), y_pred=ops.concatenate([y_pred, y_pred], axis=0),
            sample_weight=2.0 * ops.concatenate([given * weight, given * (1.0 - weight)], axis=0), training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if _mixed(y):  # the label with the larger share of the mixed image
            labels = y["labels"]
            own = ops.reshape(y["weight"] >= 0.5, (-1,) + (1,) * (len(labels.shape) - 1))
            y = ops.where(own, labels, y["other"])
        return super().compute_metrics(x, y, y_pred, sample_weight)


def plain(model: keras.Model) -> keras.Model:
    """The model without its mixing train step (what is saved, and what ablation.cli.predict loads)."""
    if not isinstance(model, MixingModel):
        return model
    return keras.Model(model.input, model.output, name=model.name)
