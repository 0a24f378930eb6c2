"""The honest overfitting gap, measured every epoch. Keras' own training metrics come from augmented batches, which
often sit below validation and hide the real gap; so at each epoch end this callback evaluates a fixed,
un-augmented subset of the training split in inference mode (train_clean/*) and computes

    gap/loss     = val/loss - train_clean/loss           (larger = more overfitting)
    gap/accuracy = train_clean/accuracy - val/accuracy   (classification only)

Given the validation batches too, the callback evaluates both in one pass of its own (Scorer: one compiled
prediction per batch, the loss and metrics computed from the predictions) instead of fit's validation loop plus a
second `evaluate`: the same numbers at about a quarter of the cost, since a Keras `evaluate` call spends most of a
small set's time setting itself up (benchmarks/overhead.py). It then hands `val_*` to the callbacks after it
(checkpoint, early stopping, the learning-rate schedule, Keras' progress line), as fit's own validation would.

It also times the epoch: images per second of training, and the share of the training time the fit loop waited
for its next batch (against the moment Batches had each batch ready). It logs nothing itself: each epoch's row
goes to `on_row` (a run's Tracker.log_epoch), and all rows stay in `rows`."""
from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np


class Scorer:
    """A model's loss and metrics on fixed evaluation batches, in inference mode: what `model.evaluate` returns
    for the same loss and metrics (the compiled ones: pass what compile got), at one `predict_on_batch` per batch.
    Padding rows (sample weight 0, several devices on JAX) count in nothing."""

    def __init__(self, loss, metrics: list):
        self.loss = keras.losses.get(loss) if isinstance(loss, str) else loss
        self.metrics = list(metrics)

    def __call__(self, model: keras.Model, batches) -> dict[str, float]:
        trackers = None
        for index in range(len(batches)):
            x, y, *weights = batches[index]
            pred = keras.ops.convert_to_numpy(model.predict_on_batch(x))
            if weights:
                keep = np.asarray(weights[0]) > 0
                pred, y = pred[keep], y[keep]
            if np.ndim(y) == pred.ndim - 1 and pred.shape[-1] == 1:
                y = y[..., None]  # one sigmoid unit per label, as Keras' loss wrapper matches the ranks
            if trackers is None:
                # A mean over every image, as evaluate's weighted means of per-batch means come to.
                trackers = [keras.metrics.MeanMetricWrapper(self.loss, name="loss"),
                            *(keras.metrics.MeanMetricWrapper(_metric_fn(m, y, pred), name=_metric_name(m))
                              for m in self.metrics)]
            for tracker in trackers:
                tracker.update_state(y, pred)
        scores = {t.name: float(keras.ops.convert_to_numpy(t.result())) for t in trackers}
        scores["loss"] += _regularization(model)
        return scores


def _metric_name(metric) -> str:
    return metric if isinstance(metric, str) else metric.__name__


def _metric_fn(metric, y, pred):
    """The function Keras' compile picks for a metric: "accuracy" by the shapes of labels and predictions."""
    if metric in ("accuracy", "acc"):
        if pred.shape[-1] == 1:
            return keras.metrics.binary_accuracy
        if np.ndim(y) < pred.ndim:
            return keras.metrics.sparse_categorical_accuracy
        return keras.metrics.categorical_accuracy
    return keras.metrics.get(metric) if isinstance(metric, str) else metric


def _regularization(model: keras.Model) -> float:
    """evaluate's loss includes the layers' regularization losses (none in the shipped models)."""
    return float(sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses)) if model.losses else 0.0


class CleanGap(keras.callbacks.Callback):
    """Per epoch (epoch numbers from 1): Keras' training metrics on augmented batches, the clean evaluation of
    the training subset, validation, the gaps, timings and the input wait."""

    def __init__(self, train, clean_train, on_row: Callable[[dict], None] | None = None, *, val=None,
                 scorer: Scorer | None = None):
        """val, scorer: evaluate validation here too, in one pass with the clean subset (fit then runs without
        validation_data); without them, validation comes from fit's logs and the clean subset from `evaluate`."""
        super().__init__()
        self.train = train
        self.clean_train = clean_train
        self.on_row = on_row
        self.val = val
        self.scorer = scorer
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
        train_end = self._train_end or self.train.ready.clock()
        train_s = train_end - self._start
        logs = {} if logs is None else logs
        evaluated = time.perf_counter()
        if self.val is not None:
            clean = self.scorer(self.model, self.clean_train)
            # The callbacks after this one (and fit's History) read validation from the same logs dict.
            logs.update({f"val_{m}": v for m, v in self.scorer(self.model, self.val).items()})
        else:
            clean = self.model.evaluate(self.clean_train, verbose=0, return_dict=True)
        evaluate_s = time.perf_counter() - evaluated
        end = self.train.ready.clock()
        # The compiled loss and metrics, whatever the task's are (accuracy; mae and psnr), for each split.
        names = list(clean)
        row = {
            "epoch": epoch + 1,
            **{f"train/{m}": logs.get(m) for m in names},
            **{f"train_clean/{m}": clean.get(m) for m in names},
            **{f"val/{m}": logs.get(f"val_{m}") for m in names},
            "train/learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "time/epoch_s": end - self._start,
            "time/evaluate_s": evaluate_s,
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
