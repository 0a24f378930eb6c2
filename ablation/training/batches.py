"""Batches: the generator that feeds keras fit. Training batches are reshuffled every epoch from the seed
and every image is augmented afresh; validation, test and clean-train batches are passed through untouched.
Batches stay uint8: the model rescales to [0, 1] in its first layer (models.build), so the host never writes
float32 and the tensors copied into the graph are four times smaller."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from ablation.augment import empty_batch, mixing
from ablation.training import tasks


class ReadyTimes:
    """When each batch (epoch, index) was ready, by `clock` (time.perf_counter unless given): marked by whichever
    thread built it, taken once by the callback that measures the fit loop's input wait (measure.CleanGap, which
    reads the same clock) as that step ends."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        # A dict's item assignment and pop are atomic under the GIL: the threads that build batches and the fit
        # loop that takes their times need no lock.
        self._times: dict[tuple[int, int], float] = {}

    def mark(self, epoch: int, index: int) -> None:
        self._times[epoch, index] = self.clock()

    def take(self, epoch: int, index: int) -> float | None:
        return self._times.pop((epoch, index), None)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._times


@dataclass(frozen=True)
class Draw:
    """What makes batches training batches: reshuffled every epoch from the seed, and what is drawn for them.

    policy: an augment.Policy applied to each batch (None: the images as they are).
    seed: the order and the augmentation of batch i in epoch e depend only on (seed, e, i), so a run is
          reproducible whatever the worker threads do.
    steps: batches per epoch (None: one pass); more than ceil(n / batch_size) draws extra augmented samples.
    mix: batch mixing (MixUp, CutMix: ablation/augment/mixing.py), drawn per batch after the policy; y is then
         {labels, permutation, weight[, box]}. mix_images: mix the pixels here (augmentation.placement=host),
         or leave them to the model's train step (placement=device).
    """
    policy: object = None
    seed: int = 0
    steps: int | None = None
    mix: mixing.Mix | None = None
    mix_images: bool = True


@dataclass(frozen=True)
class Feed:
    """How Keras' PyDataset prepares the batches (trainer.workers, use_multiprocessing, max_queue_size)."""
    workers: int = 1
    use_multiprocessing: bool = False
    max_queue_size: int = 10


class Batches(keras.utils.PyDataset):
    """(x, y) batches of uint8 images from uint8 arrays (read-only memory maps included).

    draw: training batches (Draw: reshuffled every epoch, augmented, mixed); None for evaluation data, passed
          through untouched in their order.
    feed: the PyDataset's workers and queue (Feed).
    pad_to: a batch whose length is not a multiple of this (the last, short one) is padded by repeating its
            first images with sample weight 0, so it splits evenly across devices (data-parallel training on
            JAX); the padding counts in no loss or metric. With pad_to > 1 every batch carries sample weights.
    task: what y is (ablation/training/tasks.py): the labels (classify, the default) or target images in [0, 1] made
          from the batch's images (reconstruct, inpaint; an inpaint input is masked).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, *, draw: Draw | None = None,
                 feed: Feed = Feed(), pad_to: int = 1, task: tasks.Classify | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__(workers=feed.workers, use_multiprocessing=feed.use_multiprocessing,
                         max_queue_size=feed.max_queue_size)
        if len(x) != len(y):
            raise ValueError(f"images and labels differ in length: {len(x)} vs {len(y)}")
        if len(x) == 0:
            raise ValueError("no images to batch")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = draw is not None
        draw = draw or Draw()
        self.policy = None if draw.policy is None or draw.policy.is_identity else draw.policy
        self.seed = draw.seed
        self.steps = draw.steps or math.ceil(len(x) / batch_size)
        self.extra_steps = draw.steps is not None
        self.pad_to = pad_to
        self.task = task or tasks.CLASSIFY
        self.mix, self.mix_images = draw.mix, draw.mix_images
        self.epoch = 0
        self._order = self._epoch_order(0)
        self._orders: dict[int, np.ndarray] = {}
        self._orders_lock = threading.Lock()
        # When each batch was ready: the fit loop's input wait is measured against it (measure.CleanGap).
        self.ready = ReadyTimes(clock)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self.x)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, epoch])
        # One pass by default (the last batch may be short); an explicit `steps` gets enough whole
        # permutations to fill its batches, so every image is seen before any repeats.
        reps = math.ceil(self.steps * self.batch_size / n) if self.extra_steps else 1
        return np.concatenate([rng.permutation(n) for _ in range(reps)])

    @property
    def images_per_epoch(self) -> int:
        return min(self.steps * self.batch_size, len(self._order))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.batch_at(self.epoch, index)

    def batch_at(self, epoch: int, index: int):
        """Batch `index` of epoch `epoch`; any thread may ask for any (epoch, index), in any order (the tf.data
        feed of backend.fit_input prepares several at once, across epoch boundaries)."""
        if index >= self.steps:
            raise IndexError(f"batch {index} out of range ({self.steps} per epoch)")
        order = self._order if epoch == self.epoch else self._order_of(epoch)
        idx = order[index * self.batch_size:(index + 1) * self.batch_size]
        # Training batches draw their augmentation (and an inpaint task its masks) from (seed, epoch, batch);
        # evaluation batches draw nothing.
        rng = np.random.default_rng([self.seed, epoch, index]) if self.shuffle else None
        x, y = self.task.batch(_gather(self.x, idx), self.y[idx], idx, self.policy, rng)
        if self.mix is not None:
            numbers = mixing.draw(self.mix, len(x), x.shape[1], x.shape[2], rng)
            x = mixing.mix_images(x, numbers) if self.mix_images else x
            y = mixing.targets(y, numbers, on_device=not self.mix_images)
        if self.pad_to > 1:
            x, y, weights = _pad(x, y, self.pad_to)
            self.ready.mark(epoch, index)
            return x, y, weights
        self.ready.mark(epoch, index)
        return x, y

    def _order_of(self, epoch: int) -> np.ndarray:
        with self._orders_lock:
            if epoch not in self._orders:
                if len(self._orders) > 2:  # the feed is at most an epoch ahead
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = self._epoch_order(epoch)
            return self._orders[epoch]

    def __getstate__(self):
        state = self.__dict__.copy()  # the lock stays behind (multiprocessing workers pickle the dataset)
        state.pop("_orders_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._orders_lock = threading.Lock()

    def start_at(self, epoch: int) -> None:
        """Continue from epoch `epoch` (a resumed run), with that epoch's order and augmentation."""
        self.epoch = epoch
        self._order = self._epoch_order(epoch)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.epoch += 1
            self._order = self._epoch_order(self.epoch)


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x[idx] into an aligned batch (augment.empty_batch: TensorFlow takes it without a copy), row by row, which
    is as fast as fancy indexing (np.take with `out` is several times slower)."""
    out = empty_batch((len(idx), *x.shape[1:]), x.dtype)
    for row, i in enumerate(idx):
        out[row] = x[i]
    return out


def _pad(x: np.ndarray, y, multiple: int):
    """y: an array, or a dict of arrays (a mixed batch; its permutation still points into the first len(x))."""
    weights = np.ones(len(x), dtype="float32")
    short = -len(x) % multiple
    if short:
        fill = np.arange(short) % len(x)
        x = np.concatenate([x, x[fill]])
        y = ({k: np.concatenate([v, v[fill]]) for k, v in y.items()} if isinstance(y, dict)
             else np.concatenate([y, y[fill]]))
        weights = np.concatenate([weights, np.zeros(short, dtype="float32")])
    return x, y, weights
