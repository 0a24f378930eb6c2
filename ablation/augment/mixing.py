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
also the permutation and the CutMix boxes), and the model (MixingModel, ablation/augment/mix_step.py) computes the loss as
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

import numpy as np

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
