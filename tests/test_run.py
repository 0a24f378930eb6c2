"""A whole run end to end: real Keras training on tiny digits, recorded in a real (temporary) MLflow store."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablation import augment, tracking
from ablation.training.run import run
from conftest import ROOT, compose_config, store_overrides, store_untouched
from helpers import wait_for

PER_EPOCH = ["train/loss", "train/accuracy", "train_clean/loss", "train_clean/accuracy", "val/loss", "val/accuracy",
             "gap/loss", "gap/accuracy", "time/epoch_s", "throughput/images_per_s", "perf/input_wait_fraction"]
FINAL = ["test/loss", "test/accuracy", "best_epoch", "best/gap_accuracy", "best/gap_loss"]
ARTIFACTS = {"config.yaml", "policy.json", "history.csv", "learning_curves.png", "augmentation_preview.png",
             "model.keras"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One rotate run on 48 digits for 3 epochs, shared by the assertions below."""
    store = tmp_path_factory.mktemp("store")
    cfg = compose_config("trainer.epochs=3", "augmentation=rotate", "seed=1", "dataset.train_size=48", "lenses=off",
                         *store_overrides(store))
    metrics = run(cfg)
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    return cfg, metrics, client, client.get_run(metrics["run_id"])


def test_run_is_named_tagged_and_finished(finished):
    cfg, _, _, mlrun = finished
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.run_name == "rotate/small_cnn/s1"
    tags = mlrun.data.tags
    assert {tags[k] for k in ("dataset", "model", "augmentation", "seed")} == {"digits", "small_cnn", "rotate", "1"}
    assert tags["config_hash"] == tracking.config_hash(cfg, augment.build(cfg.augmentation).fingerprint)
    assert tags["policy_fingerprint"] == augment.build(cfg.augmentation).fingerprint
    assert tags["device"]
    assert mlrun.data.params["trainer.epochs"] == "3"
    assert mlrun.data.params["augmentation.name"] == "rotate"


def test_one_point_per_epoch_for_each_per_epoch_metric(finished):
    _, _, client, mlrun = finished
    for key in PER_EPOCH:
        history = client.get_metric_history(mlrun.info.run_id, key)
        assert sorted(m.step for m in history) == [1, 2, 3], key


def test_gap_is_validation_minus_clean_training(finished):
    _, _, client, mlrun = finished

    def series(key):
        return {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, key)}

    val, clean, gap = series("val/loss"), series("train_clean/loss"), series("gap/loss")
    for step in gap:
        assert gap[step] == pytest.approx(val[step] - clean[step], abs=1e-6)
    vacc, cacc, gacc = series("val/accuracy"), series("train_clean/accuracy"), series("gap/accuracy")
    for step in gacc:
        assert gacc[step] == pytest.approx(cacc[step] - vacc[step], abs=1e-6)


def test_final_metrics_and_artifacts(finished):
    _, metrics, client, mlrun = finished
    for key in FINAL:
        assert key in mlrun.data.metrics, key
    assert 1 <= mlrun.data.metrics["best_epoch"] <= 3
    assert 0 <= metrics["test/accuracy"] <= 1
    names = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert ARTIFACTS <= names, names


def test_a_run_that_raises_is_failed_with_the_reason(make_cfg, tmp_path):
    cfg = make_cfg()
    with pytest.raises(RuntimeError):
        with tracking.run(cfg, "none/small_cnn/s0", {"seed": 0}):
            raise RuntimeError("loss exploded")
    with pytest.raises(KeyboardInterrupt):
        with tracking.run(cfg, "none/small_cnn/s1", {"seed": 1}):
            raise KeyboardInterrupt
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("digits").experiment_id])}
    failed, killed = runs["none/small_cnn/s0"], runs["none/small_cnn/s1"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"] == "RuntimeError: loss exploded"
    assert killed.info.status == "KILLED"


@pytest.mark.slow
def test_multirun_of_two_policies_records_two_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run(
        [sys.executable, "-m", "ablation", "-m", "augmentation=none,hflip", "trainer=smoke", "trainer.epochs=1",
         "dataset.train_size=32", "tracking.log_model=false", f"tracking.uri={uri}",
         f"paths.reports={tmp_path}/reports",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("digits").experiment_id])
            if r.data.tags.get("sweep") != "parent"]
    assert sorted(r.info.run_name for r in runs) == ["hflip/small_cnn/s0", "none/small_cnn/s0"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_diverging_run_is_failed_not_finished(make_cfg):
    cfg = make_cfg("trainer.optimizer=sgd", "trainer.learning_rate=1e12", "dataset.train_size=48", "trainer.epochs=3")
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert failed.info.status == "FAILED"
    assert "training loss became nan" in failed.data.tags["error"]


@pytest.mark.slow
def test_sigterm_during_a_run_marks_it_killed(tmp_path):
    import signal

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Epochs enough that the run is still training when its first epoch's metrics reach the store, however late
    # the asynchronous writes arrive on a loaded machine (it is stopped long before its end).
    proc = subprocess.Popen([sys.executable, "-m", "ablation", "trainer.epochs=5000", "dataset.train_size=64",
                             "trainer.verbose=0", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/out"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(tracking_uri=uri)

    def training_under_way():
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()[1][-2000:]}"
        exp = client.get_experiment_by_name("digits") if (tmp_path / "mlflow.db").exists() else None
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return exp if runs and client.get_metric_history(runs[0].info.run_id, "val/loss") else None

    exp = wait_for(training_under_way, 180, "the run's first epoch to reach the store", interval=1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    (killed,) = client.search_runs([exp.experiment_id])
    assert killed.info.status == "KILLED"


def test_device_side_augmentation_trains_with_the_layers_in_the_model(make_cfg):
    cfg = make_cfg("augmentation=idg_classic", "augmentation.placement=device", "dataset.train_size=48",
                   "tracking.log_model=true")
    metrics = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(metrics["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["augmentation.placement"] == "device"
    # The saved model is the model as it predicts: no augmentation layers (they pass images through outside
    # training), so nothing in it needs ablation's classes to load; it predicts as the trained model did.
    import keras
    import numpy as np

    from ablation import datasets

    model_file = tracking.download(cfg.tracking, metrics["run_id"], "model.keras",
                                   Path(cfg.tracking.artifact_root) / "m")
    loaded = keras.saving.load_model(model_file, compile=False)

    def every_layer(model):
        for layer in model.layers:
            yield layer
            yield from every_layer(layer) if hasattr(layer, "layers") else ()

    assert not [layer.name for layer in every_layer(loaded) if type(layer).__module__.startswith("ablation")]
    assert not [layer.name for layer in every_layer(loaded) if layer.name.startswith("augmentation_")]
    test = datasets.load(cfg.dataset).test
    predicted = loaded.predict(test.x, verbose=0).argmax(axis=-1)
    assert np.mean(predicted == test.y) == pytest.approx(metrics["test/accuracy"], abs=1e-6)
    host = run(make_cfg("augmentation=idg_classic", "dataset.train_size=48"))
    assert host["run_id"] != metrics["run_id"]  # host and device are different combinations, not a skip
    assert not host["skipped"]


def test_a_transform_without_a_layer_is_named_before_any_run(make_cfg, tmp_path):
    from ablation.augment import PolicyError

    with pytest.raises(PolicyError, match=r"^augmentation\.transforms\[\d\]: albumentations\.CLAHE"):
        run(make_cfg("augmentation=clahe", "augmentation.placement=device"))
    assert store_untouched(tmp_path)
