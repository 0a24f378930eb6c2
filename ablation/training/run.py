"""run(cfg): one combination (dataset x model x augmentation policy x seed), from config to MLflow.
Read top to bottom, this is the whole path of a run."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablation import augment, datasets, tracking
from ablation.augment import device
from ablation.training import backend, callbacks, expansion, measure, models, normalize, record, reuse, synthetic, tasks
from ablation.training.backup import Backup
from ablation.training.backup import wanted as backup_wanted
from ablation.training.batches import Batches, Draw, Feed
from ablation.training.plan import RunPlan, plan

log = logging.getLogger(__name__)


@dataclass
class Data:
    """What a run trains on and how, once the data is read: the splits, the normalization layer's statistics,
    the policy (checked on the data's shape), the offline expansion, the device layers and the task."""
    splits: datasets.Splits
    normalization: normalize.Normalization
    policy: augment.Policy
    expanded: expansion.Expansion | None
    layers: keras.Sequential | None
    task: tasks.Classify
    load_s: float


def run(cfg: DictConfig, announce: Callable[[str], None] | None = None) -> dict[str, float]:
    """Train one combination and record it; returns the final metrics. A combination that already finished
    in this experiment is skipped (its recorded metrics are returned), and so is one that another process, here or
    on another machine, is training now (its heartbeat is fresh), unless `sweep.rerun=true`."""
    started = time.perf_counter()
    # 1. The plan: every config mistake surfaces here, before data is read or a run is opened.
    planned = plan(cfg)
    if announce is not None:
        announce(planned.name)
    if not OmegaConf.select(cfg, "sweep.rerun", default=False):
        previous = tracking.previous_runs(cfg, planned.key)
        if previous.finished is not None:
            log.info("skip %s: finished before as run %s (sweep.rerun=true reruns it)", planned.name,
                     previous.finished.info.run_id)
            return {"run_id": previous.finished.info.run_id, "skipped": True, **previous.finished.data.metrics}
        if previous.running is not None:  # alive elsewhere: it finishes there, or is taken over once it is dead
            log.info("skip %s: running %s as run %s", planned.name, previous.where, previous.running.info.run_id)
            return {"run_id": previous.running.info.run_id, "skipped": True, "running": True}
    keras.utils.set_random_seed(cfg.seed)
    # 2. Data, the policy checked on its shape, the task.
    data = load_data(cfg, planned)
    backup = Backup(planned.key) if backup_wanted(cfg.trainer.resume) else None  # continue a killed run
    earlier = backup.history() if backup else []

    with backend.training_scope(cfg.trainer) as replicas:
        # 3. Batches: the policy goes to the training batches only (host placement); val, test and the
        # clean-train subset are never augmented.
        batches_of = functools.partial(
            make_batches, cfg, data.splits, data.policy if planned.placement.batches_augment else None,
            pad_to=backend.batch_multiple(replicas), task=data.task, mix=data.policy.mix,
            mix_images=planned.placement.mix_at == "host")
        batches = batches_of(train=data.expanded.train if data.expanded else None)
        # 4. The model, compiled from the trainer settings.
        model = build_model(cfg, planned, data, replicas)
        tags = {**planned.tags, "devices": replicas, "device": backend.device_description(),
                "keras_backend": keras.backend.backend()}
        if data.expanded:
            tags["expanded_dir"] = str(data.expanded.folder)
        if earlier:
            tags.update(resumed_from=backup.previous_run(), resumed_at_epoch=len(earlier))

        # 5. Fit inside the tracked run: closed FAILED if anything below raises, KILLED on an interrupt.
        with tracking.run(cfg, planned.name, tags) as tracker, tracking.scratch_dir() as scratch:
            scratch = Path(scratch)
            record.inputs(tracker, cfg, planned, data.splits, data.normalization, scratch,
                          {"time/data_load_s": data.load_s, **(data.expanded.metrics if data.expanded else {})})
            if synthetic.active(cfg):
                # The generator trains (or its images are reused) inside the run, so one that diverges fails it;
                # its images join the training batches, which the policy then augments like the real ones.
                batches = batches_of(train=synthetic.prepare(cfg, data.splits, tracker, scratch).train)
            fit_started = time.perf_counter()
            history, best_weights = fit(cfg, model, batches, tracker, scratch, data, replicas, backup, earlier)
            fit_s = time.perf_counter() - fit_started
            # 6. The test score comes from the best weights (the epoch the callbacks kept).
            best = callbacks.best_row(history, cfg.trainer.monitor)
            if best_weights.exists():
                model.load_weights(best_weights)
            scores = model.evaluate(batches["test"], verbose=0, return_dict=True)
            # 7. Results, the lenses and artifacts.
            final = record.results(tracker, planned, scores, history, best, scratch=scratch,
                                   times={"time/fit_s": fit_s, "time/total_s": time.perf_counter() - started})
            final.update(record_model(cfg, planned, model, data, tracker, scratch))
            log.info(record.headline(planned, final))
    if backup:
        backup.clear()
    return {"run_id": tracker.run_id, "skipped": False, **final}


def load_data(cfg: DictConfig, planned: RunPlan) -> Data:
    """The splits (uint8, split by the seed), the normalization (a layer in the model, so val, test and a saved
    model apply the same transform; featurewise statistics from the training split only), the plan's policy
    tried once on the data's shape, the offline expansion and the device layers where the plan places them."""
    load_started = time.perf_counter()
    splits = datasets.load(cfg.dataset)
    load_s = time.perf_counter() - load_started
    models.check_input(cfg.model, splits.input_shape)
    if synthetic.active(cfg):  # too few images of a class to train a generator on: said before anything trains
        synthetic.check_data(cfg, splits)
    normalization = normalize.prepare(cfg.dataset, splits)
    # A crop larger than the image, a policy that changes the shape: said now, named by its key.
    policy = planned.policy
    policy.try_on(splits.input_shape)
    # offline: the policy wrote the originals plus `copies` augmented versions ahead of training (reused while
    # its inputs are unchanged); the training batches read them as they are. Evaluation data stays the dataset's.
    expanded = expansion.prepare(cfg, splits, policy) if planned.placement.where == "offline" else None
    # device: the same policy as Keras layers inside the model (on the GPU when there is one).
    layers = (device.layers_for(cfg.augmentation, splits.input_shape, cfg.seed) if planned.placement.model_layers
              else None)
    return Data(splits, normalization, policy, expanded, layers, tasks.build(cfg), load_s)


def build_model(cfg: DictConfig, planned: RunPlan, data: Data, replicas: int) -> keras.Model:
    """The model, compiled from the trainer settings. A model of the same architecture and settings that this
    process compiled for an earlier run takes this one's starting weights instead (ablation/training/reuse.py)."""
    trainer, splits, mix_at = cfg.trainer, data.splits, planned.placement.mix_at
    model = models.build(cfg.model, splits.input_shape, splits.num_classes, augmentation=data.layers,
                         normalization=data.normalization.layer(), task=data.task.name, mix=mix_at)
    keep = trainer.get("keep_compiled", True) and replicas == 1
    architecture = {"model": OmegaConf.to_container(cfg.model, resolve=True), "shape": splits.input_shape,
                    "classes": splits.num_classes, "task": data.task.name, "mix": mix_at,
                    "normalize": cfg.dataset.get("normalize", "rescale"),
                    "device": OmegaConf.to_container(cfg.augmentation, resolve=True) if data.layers else None,
                    "seed": cfg.seed if data.layers else None,
                    "trainer": {k: trainer.get(k) for k in ("optimizer", "learning_rate", "jit_compile",
                                                            "steps_per_execution", "mixed_precision")}}
    return reuse.compiled(model, lambda m: compile_model(m, trainer, data.task, splits.num_classes),
                          reuse.key(architecture) if keep else None)


def fit(cfg: DictConfig, model: keras.Model, batches: dict[str, Batches], tracker: tracking.Tracker,
        scratch: Path, data: Data, replicas: int, backup: Backup | None, earlier: list[dict]):
    """model.fit with the clean-train gap callback logging each epoch; (the epochs' rows, the best weights' file).
    A resumed run repeats the epochs trained before the kill at their own steps, so its curves are whole, and
    picks up at the next epoch with that epoch's shuffle."""
    trainer = cfg.trainer
    # Validation and the clean subset, evaluated by the callback in one pass (trainer.epoch_evaluation);
    # data-parallel runs evaluate through Keras, which splits each batch across the devices.
    one_pass = trainer.get("epoch_evaluation", "scorer") == "scorer" and replicas == 1
    scorer = measure.Scorer(data.task.loss(data.splits.num_classes), data.task.metrics()) if one_pass else None
    epochs = measure.CleanGap(batches["train"], batches["train_clean"], on_row=tracker.log_epoch,
                              val=batches["val"] if one_pass else None, scorer=scorer)
    best_weights = scratch / "best.weights.h5"
    if backup:
        backup.start(tracker.run_id)
        best_weights = backup.best_weights
        epochs.rows.extend(earlier)
        for row in earlier:
            tracker.log_epoch(row)
        batches["train"].start_at(len(earlier))
    fit_callbacks = [epochs, *callbacks.for_trainer(trainer, best_weights, earlier)]
    if backup:
        fit_callbacks += backup.callbacks(epochs.rows)
    # shuffle=False: Batches reshuffles every epoch from the seed (Keras would use global random state).
    train_input, steps = backend.fit_input(batches["train"], start_epoch=batches["train"].epoch)
    model.fit(train_input, steps_per_epoch=steps, validation_data=None if one_pass else batches["val"],
              epochs=trainer.epochs, callbacks=fit_callbacks, verbose=trainer.verbose, shuffle=False)
    return pd.DataFrame(epochs.rows), best_weights


def record_model(cfg: DictConfig, planned: RunPlan, model: keras.Model, data: Data, tracker: tracking.Tracker,
                 scratch: Path) -> dict[str, float]:
    """The lenses on the trained model (which classes the mistakes fall on, how it fares under corruptions) and
    the model itself: the MLflow Model (pyfunc, keras, `mlflow models serve`, the registry) and the plain
    model.keras that affinity and older readers take; both take uint8 images as the test split holds them."""
    inference = models.for_inference(model)
    measured = {}
    test = data.splits.test
    if planned.task == "classify" and cfg.lenses.get("per_class", True):
        measured.update(record.classes(tracker, planned, inference, test, data.splits.class_names, scratch))
    if planned.task == "classify" and cfg.lenses.corruptions:
        measured.update(record.robustness(tracker, planned, inference, test, cfg.lenses))
    if cfg.tracking.log_model:
        model_started = time.perf_counter()
        tracking.log_model(tracker, inference, test.x[:2])
        tracker.log_metrics({"time/log_model_s": time.perf_counter() - model_started})
        inference.save(scratch / "model.keras")
        tracker.log_file(scratch / "model.keras")
    return measured


def compile_model(model: keras.Model, t: DictConfig, task: tasks.Classify, num_classes: int) -> None:
    """Compile from the trainer settings. weighted_metrics: the zero-weighted padding of short batches (several
    devices on JAX) counts in no metric."""
    optimizer = keras.optimizers.get(t.optimizer)
    optimizer.learning_rate = t.learning_rate
    model.compile(optimizer=optimizer, loss=task.loss(num_classes), weighted_metrics=task.metrics(),
                  jit_compile=t.jit_compile, steps_per_execution=t.get("steps_per_execution") or 1)


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
    # Evaluation batches (validation, test, the clean subset) learn nothing: larger ones take fewer steps.
    evaluate = t.get("eval_batch_size") or t.batch_size
    return {
        "train": Batches(train.x, train.y, t.batch_size, **shared,
                         draw=Draw(policy, cfg.seed, t.steps_per_epoch, mix, mix_images),
                         feed=Feed(t.workers, t.use_multiprocessing, t.max_queue_size)),
        "val": Batches(splits.val.x, splits.val.y, evaluate, **shared),
        "test": Batches(splits.test.x, splits.test.y, evaluate, **shared),
        "train_clean": Batches(splits.train.x[clean], splits.train.y[clean], evaluate, **shared),
    }

