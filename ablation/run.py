"""run(cfg): one combination (dataset x model x augmentation policy x seed), from config to MLflow.
Read top to bottom, this is the whole path of a run."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablation import augment, backend, config, datasets, device, models, plots, sweep, tracking
from ablation.batches import Batches

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig, policy: augment.Policy) -> str:
    return f"{policy.name}/{cfg.model.name}/s{cfg.seed}"


def run(cfg: DictConfig) -> dict[str, float]:
    """Train one combination and record it; returns the final metrics. A combination that already finished
    in this experiment is skipped (its recorded metrics are returned) unless `force=true`."""
    # 1. Every config mistake surfaces here, before data is read or a run is opened.
    policy = config.validate(cfg)
    name = run_name(cfg, policy)
    key = tracking.config_hash(cfg, policy.fingerprint)
    sweep.progress(name)
    previous = None if cfg.force else tracking.finished_run(cfg, key)
    if previous is not None:
        print(f"skip {name}: finished before as run {previous.info.run_id} (force=true reruns it)", flush=True)
        return {"run_id": previous.info.run_id, "skipped": True, **previous.data.metrics}
    keras.utils.set_random_seed(cfg.seed)
    t = cfg.trainer

    # 2. Data: uint8 arrays, split by the seed. Only the training batches are augmented.
    started = time.perf_counter()
    splits = datasets.load(cfg.dataset)
    data_load_s = time.perf_counter() - started
    models.check_input(cfg.model, splits.input_shape)
    # Once more with the data's shape: a crop larger than the image, a policy that changes the shape.
    policy = augment.build(cfg.augmentation, image_shape=splits.input_shape)
    # where=device: the same policy as Keras preprocessing layers inside the model (on the GPU when there is
    # one); the input pipeline then only batches and rescales.
    on_device = cfg.augmentation.where == "device"
    augmentation_layers = device.layers_for(cfg.augmentation, splits.input_shape, cfg.seed) if on_device else None
    batches = make_batches(cfg, splits, None if on_device else policy)

    # 3. Model, compiled from the trainer settings.
    model = models.build(cfg.model, splits.input_shape, splits.num_classes, augmentation=augmentation_layers)
    optimizer = keras.optimizers.get(t.optimizer)
    optimizer.learning_rate = t.learning_rate
    model.compile(optimizer=optimizer, loss=models.loss_for(splits.num_classes), metrics=["accuracy"])

    tags = {"dataset": cfg.dataset.name, "model": cfg.model.name, "augmentation": policy.name,
            "policy": cfg.augmentation.name, "seed": cfg.seed, "experiment": cfg.experiment_name, "config_hash": key,
            "policy_fingerprint": policy.fingerprint, "device": backend.device_description(),
            "keras_backend": keras.backend.backend()}

    # 4. Train and record; the run is closed FAILED if anything below raises.
    with tracking.run(cfg, name, tags) as tracker, tracking.scratch_dir() as scratch:
        scratch = Path(scratch)
        tracker.log_params(tracking.flatten(cfg))
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracker.log_text(json.dumps(policy.to_dict(), indent=2), "policy.json")
        tracker.log_figure(plots.preview_grid(splits.train.x[0], policy, n=8, seed=cfg.seed), "augmentation_preview.png")
        tracker.log_metrics({"data/n_train": len(splits.train.y), "data/n_val": len(splits.val.y),
                             "data/n_test": len(splits.test.y), "data/num_classes": splits.num_classes,
                             "time/data_load_s": data_load_s})

        epochs = tracker.callback(batches["train"], batches["train_clean"])
        best_weights = scratch / "best.weights.h5"
        callbacks = [epochs] + _callbacks(t, best_weights)
        fit_started = time.perf_counter()
        # shuffle=False: Batches reshuffles every epoch from the seed; Keras would otherwise also permute the batch
        # order with Python's global random state.
        model.fit(batches["train"], validation_data=batches["val"], epochs=t.epochs, callbacks=callbacks,
                  verbose=t.verbose, shuffle=False)
        fit_s = time.perf_counter() - fit_started

        history = pd.DataFrame(epochs.rows)
        best = _best_row(history, t.monitor)
        if best_weights.exists():
            model.load_weights(best_weights)
        scores = model.evaluate(batches["test"], verbose=0, return_dict=True)
        final = {"test/loss": scores["loss"], "test/accuracy": scores["accuracy"], "best_epoch": best["epoch"],
                 "best/gap_accuracy": best.get("gap/accuracy"), "best/gap_loss": best.get("gap/loss"),
                 "best/val_loss": best.get("val/loss"), "best/val_accuracy": best.get("val/accuracy"),
                 "best/train_clean_accuracy": best.get("train_clean/accuracy"), "time/fit_s": fit_s,
                 "time/total_s": time.perf_counter() - started}
        tracker.log_metrics(final)

        history.to_csv(scratch / "history.csv", index=False)
        tracker.log_file(scratch / "history.csv")
        tracker.log_figure(plots.learning_curves(history, best_epoch=best["epoch"], title=name),
                           "learning_curves.png")
        if cfg.tracking.log_model:
            model.save(scratch / "model.keras")
            tracker.log_file(scratch / "model.keras")
        log.info("%s: test accuracy %.3f, gap (loss) at best epoch %s: %.3f", name, final["test/accuracy"],
                 best["epoch"], final["best/gap_loss"] if final["best/gap_loss"] is not None else float("nan"))
    return {"run_id": tracker.run_id, "skipped": False, **final}


def make_batches(cfg: DictConfig, splits: datasets.Splits, policy: augment.Policy) -> dict[str, Batches]:
    """The policy goes to the training batches only; val, test and the clean-train subset are never augmented."""
    t = cfg.trainer
    # The honest training score: a fixed subset of the training split, un-augmented, in inference mode.
    clean = np.sort(np.random.default_rng(cfg.seed).permutation(len(splits.train.y))[:t.clean_train_size])
    return {
        "train": Batches(splits.train.x, splits.train.y, t.batch_size, policy=policy, shuffle=True, seed=cfg.seed,
                         steps=t.steps_per_epoch, workers=t.workers, use_multiprocessing=t.use_multiprocessing,
                         max_queue_size=t.max_queue_size),
        "val": Batches(splits.val.x, splits.val.y, t.batch_size),
        "test": Batches(splits.test.x, splits.test.y, t.batch_size),
        "train_clean": Batches(splits.train.x[clean], splits.train.y[clean], t.batch_size),
    }


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Keras' TerminateOnNaN stops training quietly, which would record a diverged run as FINISHED; raising
    instead closes the run FAILED with the reason (and a sweep goes on to the next combination)."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} in epoch {epoch + 1}; lower trainer.learning_rate")


def _callbacks(t: DictConfig, best_weights: Path) -> list[keras.callbacks.Callback]:
    mode = "min" if t.monitor.endswith("loss") else "max"
    out: list[keras.callbacks.Callback] = [FailOnNonFiniteLoss()]
    if t.checkpoint.enabled:
        out.append(keras.callbacks.ModelCheckpoint(str(best_weights), monitor=t.monitor, mode=mode,
                                                   save_best_only=True, save_weights_only=True))
    if t.early_stopping.enabled:
        out.append(keras.callbacks.EarlyStopping(monitor=t.monitor, mode=mode, patience=t.early_stopping.patience,
                                                 restore_best_weights=True))
    if t.reduce_lr.enabled:
        out.append(keras.callbacks.ReduceLROnPlateau(monitor=t.monitor, mode=mode, factor=t.reduce_lr.factor,
                                                     patience=t.reduce_lr.patience, min_lr=t.reduce_lr.min_lr))
    return out


def _best_row(history: pd.DataFrame, monitor: str) -> dict:
    """The epoch the callbacks keep: best monitored validation metric, earliest on ties."""
    column = monitor.replace("val_", "val/")
    scores = history[column]
    position = scores.idxmin() if monitor.endswith("loss") else scores.idxmax()
    row = history.loc[position].to_dict()
    row["epoch"] = int(row["epoch"])
    return row
