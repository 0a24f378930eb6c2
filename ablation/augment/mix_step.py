"""The device's half of MixUp and CutMix (ablation/augment/mixing.py draws the numbers and mixes on the host):
MixingModel, a functional model whose train step mixes each batch with keras.layers.MixUp / CutMix from the
batch's drawn numbers and weighs the loss of both labels, and `plain`, the same model without that step.

Apart from mixing.py so that reading and checking a policy (ablation.augment) imports no Keras."""
from __future__ import annotations

import keras
from keras import ops


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
