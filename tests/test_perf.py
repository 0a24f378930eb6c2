"""The per-epoch input-wait measurement: a pipeline that cannot keep up shows as waiting, a ready one does not.
The fractions are checked against a clock the test moves by hand, so they are exact on any machine."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ablation import tracking
from ablation.training import backend, measure, models
from ablation.training.batches import Batches, Draw


class Clock:
    """A clock the test moves by hand, given to the training batches (Batches(clock=...)); their ReadyTimes marks
    batches by it and CleanGap reads it too."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def _epoch(clock, logger, train, epoch, waits, step_s=0.05, built_ahead=()):
    """One epoch of the fit loop's callbacks, as Keras calls them, with batch i built `waits[i]` seconds after
    its step began (or before the epoch, for the indices in built_ahead); each step then takes step_s."""
    for i in built_ahead:
        train.batch_at(epoch, i)
    logger.on_epoch_begin(epoch)
    for i, wait in enumerate(waits):
        logger.on_train_batch_begin(i)
        if i not in built_ahead:
            clock.now += wait
            train.batch_at(epoch, i)  # marks the batch ready now
        clock.now += step_s
        logger.on_train_batch_end(i)
    logger.on_test_begin()
    clock.now += 1.0  # validation and the clean evaluation are not training time
    logger.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.6})
    return logger.rows[-1]


def test_input_wait_is_the_share_of_training_spent_waiting_for_batches(clock):
    x = np.zeros((64, 8, 8, 1), np.uint8)
    train = Batches(x, np.arange(64) % 2, 16, draw=Draw(), clock=clock)  # 4 batches per epoch
    logger = measure.CleanGap(train, Batches(x, np.arange(64) % 2, 16))
    # The clean evaluation's numbers are not what is measured here.
    logger.set_model(SimpleNamespace(evaluate=lambda *a, **k: {"loss": 0.4, "accuracy": 0.9},
                                     optimizer=SimpleNamespace(learning_rate=0.01)))

    starved = _epoch(clock, logger, train, 0, waits=[0.25] * 4)
    assert starved["perf/input_wait_fraction"] == pytest.approx(1.0 / 1.2)  # waited 4 x 0.25 s of 4 x 0.30 s
    assert starved["time/epoch_s"] == pytest.approx(2.2)
    assert starved["throughput/images_per_s"] == pytest.approx(64 / 1.2)

    fed = _epoch(clock, logger, train, 1, waits=[0.0] * 4, built_ahead=range(4))
    assert fed["perf/input_wait_fraction"] == 0.0  # every batch was ready before its step asked for it

    mixed = _epoch(clock, logger, train, 2, waits=[0.0, 0.15, 0.0, 0.05], built_ahead=(0, 2))
    assert mixed["perf/input_wait_fraction"] == pytest.approx(0.2 / 0.4)
    # Each ready time is taken once, by its own step: none is left behind.
    assert not any((e, i) in train.ready for e in range(3) for i in range(4))
    assert [row["epoch"] for row in logger.rows] == [1, 2, 3]


def _fit(make_cfg, policy):
    cfg = make_cfg()
    x = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
    y = np.arange(64) % 2
    train = Batches(x, y, 16, draw=Draw(policy))
    model = models.build_small_cnn((16, 16, 1), 2, filters=(4,), dense=8)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    with tracking.run(cfg, "perf", {}) as tracker:
        logger = measure.CleanGap(train, Batches(x, y, 16), on_row=tracker.log_epoch)
        # The training input as runs feed it (backend.fit_input: tf.data on TensorFlow, the PyDataset elsewhere).
        data, steps = backend.fit_input(train)
        model.fit(data, steps_per_epoch=steps, validation_data=Batches(x, y, 16), epochs=3, callbacks=[logger],
                  verbose=0, shuffle=False)
    return cfg, tracker.run_id, train, [row["perf/input_wait_fraction"] for row in logger.rows]


def test_a_real_fit_logs_the_input_wait_of_every_epoch(make_cfg):
    """The fit loop as runs drive it: the callback takes each step's batch ready time and logs the fraction."""
    cfg, run_id, train, waits = _fit(make_cfg, None)
    assert len(waits) == 3 and all(0.0 <= f <= 1.0 for f in waits), waits
    # Step i of epoch e took batch (e, i)'s ready time: none of the three epochs' times is left behind.
    assert not any((e, i) in train.ready for e in range(3) for i in range(len(train))), train.ready._times
    # Logged asynchronously during the epochs, all flushed before the run closed.
    history = MlflowClient(tracking_uri=cfg.tracking.uri).get_metric_history(run_id, "perf/input_wait_fraction")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]


def test_the_cifar_benchmark_section_reads_a_real_run(tmp_path):
    """benchmarks/pipeline.py section 6 (`--only cifar`), shrunk: a synthetic CIFAR-10-like .npz through the npz
    source and ablation.training.run.run, reported from the run's MLflow record on whichever backend runs the tests."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("benchmark_pipeline", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    result = bench.cifar_epoch(tmp_path, n_train=192, n_eval=64, epochs=2,
                               overrides=("trainer.clean_train_size=64",))
    assert (result["n_train"], result["n_val"], result["batch_size"]) == (192, 64, bench.BATCH)
    assert len(result["epochs"]) == 2
    for epoch in result["epochs"]:
        assert epoch["throughput/images_per_s"] > 0
        assert 0.0 <= epoch["perf/input_wait_fraction"] <= 1.0
        assert epoch["time/epoch_s"] > 0
    assert result["backend"] == keras.backend.backend()
    assert result["device"] == backend.device_description()
    with np.load(tmp_path / "cifar10-synthetic.npz") as data:
        assert data["x_train"].shape == (192, 32, 32, 3) and data["x_train"].dtype == np.uint8
        assert list(data["class_names"]) == bench.CIFAR10_CLASSES
        assert sorted(np.unique(data["y_train"])) == list(range(10))
