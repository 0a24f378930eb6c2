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

from ablation import (
    augment,
    backend,
    config,
    datasets,
    errors,
    expand,
    measure,
    models,
    normalize,
    plots,
    sweep,
    tasks,
    tracking,
)
from ablation.augment import device
from ablation.backup import Backup
from ablation.batches import Batches

log = logging.getLogger(__name__)


def run_name(cfg: DictConfig, policy: augment.Policy) -> str:
    return f"{expand.label(cfg, policy.name)}/{cfg.model.name}/s{cfg.seed}"


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
    # dataset.normalize: a layer in the model, so val, test and a saved model apply the same transform; featurewise
    # statistics come from the dataset's training split only (also when training reads an offline expansion, so
    # every policy is compared under the same normalisation) and are cached with the dataset.
    normalization = normalize.prepare(cfg.dataset, splits)
    # Once more with the data's shape: a crop larger than the image, a policy that changes the shape.
    policy = augment.build(cfg.augmentation, image_shape=splits.input_shape)
    # where=device: the same policy as Keras preprocessing layers inside the model (on the GPU when there is
    # one); the input pipeline then only batches and rescales.
    on_device = cfg.augmentation.where == "device"
    augmentation_layers = device.layers_for(cfg.augmentation, splits.input_shape, cfg.seed) if on_device else None
    # mode=offline: the policy is applied once, ahead of training: the originals plus `copies` augmented versions
    # of each are written as a folder dataset (ablation/expand.py; reused while its inputs are unchanged) and
    # training reads those fixed images with no augmentation of its own. Evaluation data stays the dataset's.
    expansion = expand.prepare(cfg, splits, policy) if expand.offline(cfg) else None

    # 3. Model, compiled from the trainer settings, under the precision policy and, with trainer.devices > 1,
    # the data-parallel distribution (backend.training_scope) it trains in.
    # The task (ablation/tasks.py) decides what the batches' targets are, the model's head, its loss and metrics:
    # classes (classify), or images in [0, 1] (reconstruct: the input itself; inpaint: the unmasked image).
    task = tasks.build(cfg)
    backup = Backup(key) if t.resume else None
    with backend.training_scope(t) as replicas:
        # augmentation.mix (MixUp, CutMix): drawn by the training batches; the pixels mixed there (host) or in
        # the model's train step (device).
        mix_place = cfg.augmentation.where if policy.mix else None
        batches = make_batches(cfg, splits, None if on_device or expansion else policy,
                               pad_to=backend.batch_multiple(replicas), train=expansion.train if expansion else None,
                               task=task, mix=policy.mix, mix_images=not on_device)
        model = models.build(cfg.model, splits.input_shape, splits.num_classes, augmentation=augmentation_layers,
                             normalization=normalization.layer(), task=task.name, mix=mix_place)
        optimizer = keras.optimizers.get(t.optimizer)
        optimizer.learning_rate = t.learning_rate
        # weighted_metrics: the zero-weighted padding of short batches (several devices on JAX) counts in no
        # metric; without sample weights they are the plain metrics, under the same names.
        model.compile(optimizer=optimizer, loss=task.loss(splits.num_classes), weighted_metrics=task.metrics(),
                      jit_compile=t.jit_compile)
        train_policy = batches["train"].policy
        tags = {"devices": replicas, "task": task.name, "augmentation": expand.label(cfg, policy.name),
                "augmentation_mode": cfg.augmentation.mode,
                "train_batches_policy": train_policy.name if train_policy else "none"}
        if expansion:
            tags["expanded_dir"] = str(expansion.folder)
        final = _train_and_record(cfg, name, policy, key, splits, batches, model, backup, data_load_s, started,
                                  tags=tags, metrics=expansion.metrics if expansion else None,
                                  normalization=normalization)
    return final


def _train_and_record(cfg, name, policy, key, splits, batches, model, backup, data_load_s, started, tags,
                      metrics=None, normalization: normalize.Normalization | None = None) -> dict:
    t = cfg.trainer
    tags = {"dataset": cfg.dataset.name, "model": cfg.model.name, "augmentation": policy.name,
            "policy": cfg.augmentation.name, "seed": cfg.seed, "experiment": cfg.experiment_name, "config_hash": key,
            "policy_fingerprint": policy.fingerprint, "device": backend.device_description(),
            "keras_backend": keras.backend.backend(), **tags}
    # trainer.resume: a backup left by a killed run of this combination continues from its last completed epoch.
    earlier = backup.history() if backup else []
    if earlier:
        tags.update(resumed_from=backup.previous_run(), resumed_at_epoch=len(earlier))

    # 4. Train and record; the run is closed FAILED if anything below raises.
    with tracking.run(cfg, name, tags) as tracker, tracking.scratch_dir() as scratch:
        scratch = Path(scratch)
        tracker.log_params(tracking.flatten(cfg))
        if normalization is not None:  # the statistics the model's normalisation layer applies
            tracker.log_params(normalization.params())
            tracker.log_text(json.dumps(normalization.to_dict(), indent=1), "normalization.json")
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracker.log_text(json.dumps(policy.to_dict(), indent=2), "policy.json")
        tracker.log_figure(plots.preview_grid(splits.train.x[0], policy, n=8, seed=cfg.seed,
                                              partners=splits.train.x[1:9]), "augmentation_preview.png")
        tracker.log_metrics({"data/n_train": len(splits.train.y), "data/n_val": len(splits.val.y),
                             "data/n_test": len(splits.test.y), "data/num_classes": splits.num_classes,
                             "data/skipped_images": len(splits.skipped), "time/data_load_s": data_load_s,
                             **(metrics or {})})
        # The label mapping the model's outputs follow, fixed by the training split.
        tracker.log_text(json.dumps({"class_names": splits.class_names,
                                     "class_indices": {n: i for i, n in enumerate(splits.class_names)}}, indent=1),
                         "labels.json")
        if splits.skipped:  # dataset.on_bad_image=skip: which files were left out, and why
            pd.DataFrame(splits.skipped, columns=["file", "reason"]).to_csv(scratch / "skipped_images.csv", index=False)
            tracker.log_file(scratch / "skipped_images.csv")

        epochs = measure.CleanGap(batches["train"], batches["train_clean"], on_row=tracker.log_epoch)
        best_weights = scratch / "best.weights.h5"
        if backup:
            backup.start(tracker.run_id)
            best_weights = backup.best_weights
            # The epochs trained before the kill, repeated in this run at their own steps, so its curves are whole
            # and no step is logged twice; training picks up at the next epoch with that epoch's shuffle.
            epochs.rows.extend(earlier)
            for row in earlier:
                tracker.log_epoch(row)
            batches["train"].start_at(len(earlier))
        callbacks = [epochs] + _callbacks(t, best_weights, earlier)
        if backup:
            callbacks += backup.callbacks(epochs.rows)
        fit_started = time.perf_counter()
        # shuffle=False: Batches reshuffles every epoch from the seed; Keras would otherwise also permute the batch
        # order with Python's global random state.
        train_input, steps = backend.fit_input(batches["train"], start_epoch=batches["train"].epoch)
        model.fit(train_input, steps_per_epoch=steps, validation_data=batches["val"], epochs=t.epochs,
                  callbacks=callbacks, verbose=t.verbose, shuffle=False)
        fit_s = time.perf_counter() - fit_started

        history = pd.DataFrame(epochs.rows)
        best = _best_row(history, t.monitor)
        if best_weights.exists():
            model.load_weights(best_weights)
        scores = model.evaluate(batches["test"], verbose=0, return_dict=True)
        # The loss and the task's metrics (accuracy; or mae and psnr): test/*, and best/* at the best epoch.
        gaps = [m for m in ("accuracy", "loss") if m in scores]
        final = {**{f"test/{m}": v for m, v in scores.items()}, "best_epoch": best["epoch"],
                 **{f"best/gap_{m}": best.get(f"gap/{m}") for m in gaps},
                 **{f"best/val_{m}": best.get(f"val/{m}") for m in scores},
                 **{f"best/train_clean_{m}": best.get(f"train_clean/{m}") for m in scores if m != "loss"},
                 "time/fit_s": fit_s, "time/total_s": time.perf_counter() - started}
        tracker.log_metrics(final)

        history.to_csv(scratch / "history.csv", index=False)
        tracker.log_file(scratch / "history.csv")
        tracker.log_figure(plots.learning_curves(history, best_epoch=best["epoch"], title=name),
                           "learning_curves.png")
        if cfg.tracking.log_model:
            models.for_inference(model).save(scratch / "model.keras")
            tracker.log_file(scratch / "model.keras")
        headline = tasks.KINDS[cfg.get("task", "classify")].headline
        log.info("%s: test %s %.3f, gap (loss) at best epoch %s: %.3f", name, headline, final[f"test/{headline}"],
                 best["epoch"], final["best/gap_loss"] if final["best/gap_loss"] is not None else float("nan"))
    if backup:
        backup.clear()
    return {"run_id": tracker.run_id, "skipped": False, **final}


def make_batches(cfg: DictConfig, splits: datasets.Splits, policy: augment.Policy, pad_to: int = 1,
                 train: datasets.Split | None = None, task: tasks.Classify | None = None, mix=None,
                 mix_images: bool = True) -> dict[str, Batches]:
    """The policy goes to the training batches only; val, test and the clean-train subset are never augmented.
    train: what fit trains on when not splits.train (an offline expansion); the clean subset is from splits.train.
    task: what the batches' targets are (tasks.build(cfg) when not given). mix, mix_images: batch mixing of the
    training batches (Batches)."""
    t = cfg.trainer
    train = splits.train if train is None else train
    shared = {"pad_to": pad_to, "task": task or tasks.build(cfg)}
    # The honest training score: a fixed subset of the training split, un-augmented, in inference mode.
    clean = np.sort(np.random.default_rng(cfg.seed).permutation(len(splits.train.y))[:t.clean_train_size])
    return {
        "train": Batches(train.x, train.y, t.batch_size, policy=policy, shuffle=True, seed=cfg.seed,
                         steps=t.steps_per_epoch, workers=t.workers, use_multiprocessing=t.use_multiprocessing,
                         max_queue_size=t.max_queue_size, mix=mix, mix_images=mix_images, **shared),
        "val": Batches(splits.val.x, splits.val.y, t.batch_size, **shared),
        "test": Batches(splits.test.x, splits.test.y, t.batch_size, **shared),
        "train_clean": Batches(splits.train.x[clean], splits.train.y[clean], t.batch_size, **shared),
    }


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Keras' TerminateOnNaN stops training quietly, which would record a diverged run as FINISHED; raising
    instead closes the run FAILED with the reason (and a sweep goes on to the next combination)."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            raise errors.TrainingDiverged(f"trainer.learning_rate: the training loss became {loss} in epoch "
                                          f"{epoch + 1} at learning rate {rate:g}; lower trainer.learning_rate")


def _callbacks(t: DictConfig, best_weights: Path, earlier: list[dict]) -> list[keras.callbacks.Callback]:
    mode = "min" if t.monitor.endswith("loss") else "max"
    out: list[keras.callbacks.Callback] = [FailOnNonFiniteLoss()]
    if t.checkpoint.enabled:
        # A resumed run keeps the best weights so far unless a later epoch beats them.
        best_so_far = _best_row(pd.DataFrame(earlier), t.monitor)[t.monitor.replace("val_", "val/")] if earlier else None
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


def _best_row(history: pd.DataFrame, monitor: str) -> dict:
    """The epoch the callbacks keep: best monitored validation metric, earliest on ties."""
    column = monitor.replace("val_", "val/")
    scores = history[column]
    position = scores.idxmin() if monitor.endswith("loss") else scores.idxmax()
    row = history.loc[position].to_dict()
    row["epoch"] = int(row["epoch"])
    return row
