"""The honest overfitting gap, measured every epoch. Keras' own training metrics come from augmented batches, which
often sit below validation and hide the real gap; so at each epoch end this callback evaluates a fixed,
un-augmented subset of the training split in inference mode (train_clean/*) and computes

    gap/loss     = val/loss - train_clean/loss           (larger = more overfitting)
    gap/accuracy = train_clean/accuracy - val/accuracy   (classification only)

It also times the epoch: images per second of training, and the share of the training time the fit loop waited
for its next batch (against the moment Batches had each batch ready). It logs nothing itself: each epoch's row
goes to `on_row` (a run's Tracker.log_epoch), and all rows stay in `rows`."""
from __future__ import annotations

from collections.abc import Callable

import keras


class CleanGap(keras.callbacks.Callback):
    """Per epoch (epoch numbers from 1): Keras' training metrics on augmented batches, the clean evaluation of
    the training subset, validation, the gaps, timings and the input wait."""

    def __init__(self, train, clean_train, on_row: Callable[[dict], None] | None = None):
        super().__init__()
        self.train = train
        self.clean_train = clean_train
        self.on_row = on_row
        self.rows: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self.train.ready.clock()
        self._train_end = None
        self._waited = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = self.train.ready.clock()

    def on_train_batch_end(self, batch, logs=None):
        # The step pulled batch `batch` right after on_train_batch_begin (fit runs with shuffle=False, so step i
        # is batch i); if the batch was finished later than that, the loop waited for it.
        ready = self.train.ready.take(self._epoch, batch)
        if ready is not None:
            self._waited += max(0.0, ready - self._batch_begin)

    def on_test_begin(self, logs=None):
        # fit's validation pass; the training part of the epoch is over.
        self._train_end = self._train_end or self.train.ready.clock()

    def on_epoch_end(self, epoch, logs=None):
        end = self.train.ready.clock()
        train_s = (self._train_end or end) - self._start
        logs = logs or {}
        clean = self.model.evaluate(self.clean_train, verbose=0, return_dict=True)
        # The compiled loss and metrics, whatever the task's are (accuracy; mae and psnr), for each split.
        names = list(clean)
        row = {
            "epoch": epoch + 1,
            **{f"train/{m}": logs.get(m) for m in names},
            **{f"train_clean/{m}": clean.get(m) for m in names},
            **{f"val/{m}": logs.get(f"val_{m}") for m in names},
            "train/learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "time/epoch_s": end - self._start,
            "throughput/images_per_s": self.train.images_per_epoch / train_s,
            "perf/input_wait_fraction": min(self._waited / train_s, 1.0),
        }
        # Tasks without accuracy (reconstruct, inpaint) have the gap of their own loss only.
        if row.get("val/accuracy") is not None and row.get("train_clean/accuracy") is not None:
            row["gap/accuracy"] = row["train_clean/accuracy"] - row["val/accuracy"]
        if row["val/loss"] is not None and row["train_clean/loss"] is not None:
            row["gap/loss"] = row["val/loss"] - row["train_clean/loss"]
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)
