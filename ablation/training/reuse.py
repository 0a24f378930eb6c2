"""A compiled model kept between the runs of one process (a sweep's jobs on Hydra's basic launcher, or on one
joblib worker), so the next run of the same architecture trains with the steps already traced and compiled.

Keras traces (TensorFlow) or compiles (JAX) a model's train, predict and evaluate steps on first use, which costs
a run about as much as four later epochs of small_cnn on digits (benchmarks/overhead.py). A new run builds its
model as before, under its own seed, and when a kept model of the same architecture and training settings exists,
that model takes the fresh model's variables (weights, normalization statistics, random-layer states) and its
optimizer goes back to its state before any step: the same starting point, so the same results as a model built
and compiled afresh (tests/test_reuse.py compares them). trainer.keep_compiled=false builds afresh every run."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import keras
import numpy as np

# At most one model is kept: a sweep's runs of one architecture follow one another, and a kept model's memory
# (on a GPU too) is released as soon as another architecture comes.
_kept: dict[str, tuple[keras.Model, list[np.ndarray]]] = {}


def key(settings: dict) -> str:
    """The kept model's key: everything that decides the architecture and the compiled steps (JSON-able)."""
    text = json.dumps({"backend": keras.backend.backend(), **settings}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def compiled(fresh: keras.Model, compile: Callable[[keras.Model], None], settings_key: str | None) -> keras.Model:
    """The model a run trains: a kept model with `fresh`'s variables when one matches settings_key, else `fresh`
    compiled by `compile` (and kept, unless settings_key is None)."""
    kept = _kept.get(settings_key) if settings_key is not None else None
    if kept is not None and _same_variables(kept[0], fresh):
        model, optimizer_start = kept
        for target, value in zip(model.variables, fresh.variables):
            target.assign(value)
        for target, value in zip(model.optimizer.variables, optimizer_start):
            target.assign(value)
        return model
    _kept.clear()
    compile(fresh)
    # The optimizer's slots exist from here on (fit would build them at its first step), so their starting values
    # can be kept for the next run.
    fresh.optimizer.build(fresh.trainable_variables)
    if settings_key is not None:
        _kept[settings_key] = (fresh, [keras.ops.convert_to_numpy(v) for v in fresh.optimizer.variables])
    return fresh


def release() -> None:
    """Drop the kept model (its memory goes with it)."""
    _kept.clear()


def _same_variables(kept: keras.Model, fresh: keras.Model) -> bool:
    """A structural check behind the key: one variable for one, of the same shape and dtype."""
    return len(kept.variables) == len(fresh.variables) and all(
        tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype for a, b in zip(kept.variables, fresh.variables))
