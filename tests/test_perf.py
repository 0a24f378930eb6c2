"""The per-epoch input-wait measurement: a pipeline that cannot keep up shows as waiting, a ready one does not."""
import time

import keras
import numpy as np
from mlflow.tracking import MlflowClient

from ablation import backend, measure, models, tracking
from ablation.batches import Batches


class SlowPolicy:
    """A policy whose augmentation takes 250 ms per batch: far slower than this tiny model's step, even on a
    busy machine."""

    name = "slow"
    is_identity = False

    def augment_batch(self, images, rng):
        time.sleep(0.25)
        return images


def _fit(make_cfg, policy):
    cfg = make_cfg()
    x = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
    y = np.arange(64) % 2
    train = Batches(x, y, 16, policy=policy, shuffle=True)
    model = models.build_small_cnn((16, 16, 1), 2, filters=(4,), dense=8)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    with tracking.run(cfg, "perf", {}) as tracker:
        logger = measure.CleanGap(train, Batches(x, y, 16), on_row=tracker.log_epoch)
        # The training input as runs feed it (backend.fit_input: tf.data on TensorFlow, the PyDataset elsewhere).
        data, steps = backend.fit_input(train)
        model.fit(data, steps_per_epoch=steps, validation_data=Batches(x, y, 16), epochs=3, callbacks=[logger],
                  verbose=0, shuffle=False)
    return cfg, tracker.run_id, [row["perf/input_wait_fraction"] for row in logger.rows]


def test_a_starved_loop_waits_most_of_the_epoch_and_a_fed_one_far_less(make_cfg):
    cfg, run_id, starved = _fit(make_cfg, SlowPolicy())
    assert all(0.5 < f <= 1.0 for f in starved[1:]), starved
    # Logged asynchronously during the epochs, all flushed before the run closed.
    history = MlflowClient(tracking_uri=cfg.tracking.uri).get_metric_history(run_id, "perf/input_wait_fraction")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    # The same fit with batches that are ready at once: on a quiet machine it hardly waits; on a busy one the
    # feeding thread may be descheduled now and then, but it never waits like the starved loop.
    _, _, fed = _fit(make_cfg, None)
    assert all(0.0 <= f <= 1.0 for f in fed), fed
    assert np.median(fed[1:]) < np.median(starved[1:]) - 0.2, (fed, starved)


def test_the_cifar_benchmark_section_reads_a_real_run(tmp_path):
    """benchmarks/pipeline.py section 6 (`--only cifar`), shrunk: a synthetic CIFAR-10-like .npz through the npz
    source and ablation.run.run, reported from the run's MLflow record on whichever backend runs the tests."""
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
