"""The Keras callbacks a run trains with, besides the gap (ablation.training.measure): a loss that is not finite fails
the run, the best weights are kept (ModelCheckpoint), and the trainer's early stopping and learning-rate schedule.
best_row names the epoch they keep."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ablation.core import errors


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Keras' TerminateOnNaN stops training quietly, which would record a diverged run as FINISHED; raising
    instead closes the run FAILED with the reason (and a sweep goes on to the next combination)."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            raise errors.TrainingDiverged(f"trainer.learning_rate: the training loss became {loss} in epoch "
                                          f"{epoch + 1} at learning rate {rate:g}; lower trainer.learning_rate")


def for_trainer(t: DictConfig, best_weights: Path, earlier: list[dict]) -> list[keras.callbacks.Callback]:
    mode = "min" if t.monitor.endswith("loss") else "max"
    out: list[keras.callbacks.Callback] = [FailOnNonFiniteLoss()]
    if t.checkpoint.enabled:
        # A resumed run keeps the best weights so far unless a later epoch beats them.
        best_so_far = best_row(pd.DataFrame(earlier), t.monitor)[t.monitor.replace("val_", "val/")] if earlier else None
        out.append(keras.callbacks.ModelCheckpoint(str(best_weights), monitor=t.monitor, mode=mode,
                                                   save_best_only=True, save_weights_only=True,
                                                   initial_value_threshold=best_so_far))
    if t.early_stopping.enabled:
        out.append(keras.callbacks.EarlyStopping(monitor=t.monitor, mode=mode, patience=t.early_stopping.patience,
                                                 restore_best_weights=True))
    if t.reduce_lr.enabled:
        out.append(keras.callbacks.ReduceLROnPlateau(monitor=t.monitor, mode=mode, factor=t.reduce_lr.factor,
                                                     patience=t.reduce_lr.patience, min_lr=t.reduce_lr.min_lr))
    return out


def best_row(history: pd.DataFrame, monitor: str) -> dict:
    """The epoch the callbacks keep: best monitored validation metric, earliest on ties."""
    column = monitor.replace("val_", "val/")
    scores = history[column]
    position = scores.idxmin() if monitor.endswith("loss") else scores.idxmax()
    row = history.loc[position].to_dict()
    row["epoch"] = int(row["epoch"])
    return row

