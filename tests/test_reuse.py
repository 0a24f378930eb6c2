"""Runs in one process keep the compiled model between them (ablation/training/reuse.py): the next run of the same
architecture starts from its own seeded weights and a fresh optimizer, so it trains to the same numbers as a model
built and compiled afresh, and the per-epoch evaluation in one pass (measure.Scorer) reports what Keras' own
evaluate would."""
import keras
import numpy as np
import pytest

from ablation.training import measure, models, reuse, tasks
from ablation.training.batches import Batches
from ablation.training.run import run
from tests.conftest import compose_config, store_overrides

# Everything a run reports but how long it took and what went where.
TIMING = ("time/", "throughput/", "perf/", "run_id", "skipped")


def _run(tmp_path, seed, *overrides):
    cfg = compose_config("trainer.epochs=3", "dataset.train_size=96", "lenses.corruptions=[]", "lenses.per_class=false",
                         "tracking.log_model=false", "sweep.rerun=true", f"seed={seed}", *overrides,
                         *store_overrides(tmp_path))
    return run(cfg)


@pytest.mark.slow
def test_a_kept_model_trains_a_later_run_to_the_numbers_of_a_fresh_one(tmp_path):
    reuse.release()
    _run(tmp_path, 0)  # compiles small_cnn and keeps it
    [(kept_model, _)] = reuse._kept.values()
    kept = _run(tmp_path, 1)  # trains on the kept model, from seed 1's weights
    assert list(reuse._kept.values())[0][0] is kept_model
    reuse.release()
    fresh = _run(tmp_path, 1, "trainer.keep_compiled=false")
    assert not reuse._kept
    compared = [m for m in fresh if not m.startswith(TIMING)]
    assert "test/accuracy" in compared and "best/val_loss" in compared and kept.keys() == fresh.keys()
    for metric in compared:
        assert kept[metric] == pytest.approx(fresh[metric], abs=1e-5), metric


@pytest.mark.slow
def test_another_architecture_replaces_the_kept_model(tmp_path):
    reuse.release()
    _run(tmp_path, 0)
    [first] = reuse._kept
    _run(tmp_path, 0, "model.dense=16")
    [second] = reuse._kept
    assert first != second  # one model kept at a time, of the architecture run last


@pytest.mark.parametrize("task, classes", [("classify", 10), ("classify", 2), ("reconstruct", 1), ("inpaint", 1)])
def test_the_one_pass_scores_are_what_keras_evaluate_returns(task, classes):
    cfg = compose_config(f"task={task}")
    kind = tasks.build(cfg)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (150, 16, 16, 1), dtype=np.uint8)
    y = np.arange(150) % max(classes, 2)
    spec = cfg.model if task == "classify" else compose_config(f"task={task}", "model=conv_autoencoder").model
    model = models.build(spec, (16, 16, 1), classes, task=kind.name)
    model.compile(optimizer="adam", loss=kind.loss(classes), weighted_metrics=kind.metrics())
    batches = Batches(x, y, 64, task=kind)
    model.fit(batches, epochs=1, verbose=0)
    expected = model.evaluate(batches, verbose=0, return_dict=True)
    scorer = measure.Scorer(kind.loss(classes), kind.metrics())
    for found in (scorer(model, batches), scorer(model, Batches(x, y, 64, task=kind, pad_to=7))):
        assert found.keys() == expected.keys()
        for name, value in expected.items():
            assert found[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert keras.backend.backend() in ("tensorflow", "jax")
