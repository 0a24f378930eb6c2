"""A run's model as an MLflow Model: logged with a uint8 signature and input example and linked to its run, loaded
back through pyfunc and keras, served by `mlflow models serve`, read by ablation-predict, and registered by a
sweep (tracking.register_model) by the report's decision rule. Real tiny runs in real SQLite stores."""
import json
import os
import subprocess
import sys
import urllib.request

import mlflow
import mlflow.keras
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from PIL import Image

from ablation import datasets, tracking
from ablation.cli import predict
from ablation.core.errors import ConfigError
from ablation.report import champion
from ablation.training import config
from ablation.training.run import run
from conftest import compose_config, store_overrides
from helpers import free_port, run_sweep, store_uri, wait_for


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One tiny digits run (64 training images, trainer=smoke) that logs its model: (cfg, run_id, model URI)."""
    root = tmp_path_factory.mktemp("model")
    cfg = compose_config("dataset.train_size=64", "experiment_name=mlflow_model", "lenses=off", *store_overrides(root))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ABLATION_CACHE_DIR", str(root / "cache"))
        run_id = run(cfg)["run_id"]
        # The run's own test split, as the run saw it (same seed, same split).
        test = datasets.load(cfg.dataset).test
    return cfg, run_id, tracking.run_model_uri(cfg.tracking, run_id), test


def test_logged_model_is_linked_to_its_run_with_a_uint8_signature(logged):
    cfg, run_id, model_uri, test = logged
    assert model_uri is not None and model_uri.startswith("models:/m-")
    client = MlflowClient(tracking.store(cfg.tracking)[0])
    model = client.get_logged_model(model_uri.removeprefix("models:/"))
    assert model.source_run_id == run_id and model.name == "model" and model.status == LoggedModelStatus.READY
    # In the run's experiment (not MLflow's Default), and listed as the run's output.
    assert model.experiment_id == client.get_run(run_id).info.experiment_id
    assert [m.model_id for m in client.get_run(run_id).outputs.model_outputs] == [model.model_id]
    assert client.get_run(run_id).data.tags["model_uri"] == model_uri
    assert 0 < client.get_run(run_id).data.metrics["time/log_model_s"] < 60
    mlflow.set_tracking_uri(tracking.store(cfg.tracking)[0])
    info = mlflow.models.get_model_info(model_uri)
    assert info.run_id == run_id and "keras" in info.flavors
    spec = info.signature.inputs.inputs[0]
    assert spec.type == np.dtype("uint8") and spec.shape == (-1, *test.x.shape[1:])
    assert info.signature.outputs.inputs[0].shape == (-1, 10)
    example = mlflow.models.Model.load(model_uri).load_input_example(mlflow.artifacts.download_artifacts(model_uri))
    assert np.asarray(example).shape == (2, *test.x.shape[1:])


def test_pyfunc_reproduces_the_runs_test_accuracy(logged):
    """uint8 images straight from the test split, as a user would post them: the model rescales and normalises."""
    cfg, run_id, model_uri, test = logged
    mlflow.set_tracking_uri(tracking.store(cfg.tracking)[0])
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    p = np.asarray(pyfunc.predict(test.x))
    accuracy = float((p.argmax(axis=1) == np.asarray(test.y)).mean())
    logged_accuracy = MlflowClient(tracking.store(cfg.tracking)[0]).get_run(run_id).data.metrics["test/accuracy"]
    assert accuracy == pytest.approx(logged_accuracy, abs=1e-6)
    keras_model = mlflow.keras.load_model(model_uri)
    assert np.allclose(keras_model.predict(test.x[:8], verbose=0), p[:8], atol=1e-5)


def test_predict_reads_the_mlflow_model_by_uri_and_by_run(logged, tmp_path):
    cfg, run_id, model_uri, test = logged
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(test.x[i][..., 0] if test.x.shape[-1] == 1 else test.x[i]).save(folder / f"{i}.png")
    by_uri = pd.read_csv(predict.predict(cfg.tracking, None, folder, tmp_path / "uri.csv", model_uri=model_uri))
    by_run = pd.read_csv(predict.predict(cfg.tracking, run_id, folder, tmp_path / "run.csv"))
    pd.testing.assert_frame_equal(by_uri, by_run)
    mlflow.set_tracking_uri(tracking.store(cfg.tracking)[0])
    expected = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(test.x[:3]))
    assert np.allclose(by_uri[[f"p_{c}" for c in range(10)]].to_numpy(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="model_uri: cannot load models:/nothing/1"):
        predict.predict(cfg.tracking, None, folder, tmp_path / "x.csv", model_uri="models:/nothing/1")


def test_registering_the_same_run_again_adds_no_version(logged):
    """A resumed sweep that recommends the same run again leaves the registry as it was."""
    cfg, run_id, model_uri, _ = logged
    first, created = tracking.register_model(cfg.tracking, run_id, "again", description="why")
    assert created and str(first.version) == "1" and first.run_id == run_id and first.source == model_uri
    second, created = tracking.register_model(cfg.tracking, run_id, "again")
    assert not created and str(second.version) == "1"
    client = MlflowClient(tracking.store(cfg.tracking)[0])
    assert len(client.search_model_versions("name = 'again'")) == 1
    mlflow.set_tracking_uri(tracking.store(cfg.tracking)[0])
    assert mlflow.models.get_model_info("models:/again/1").run_id == run_id


def test_register_model_needs_a_logged_model():
    bad = compose_config("tracking.register_model=digits_best", "tracking.log_model=false")
    with pytest.raises(ConfigError, match="tracking.register_model: .*tracking.log_model=false"):
        config.check_tracking(bad)
    with pytest.raises(ConfigError, match="tracking.register_model: expected a registered model name"):
        config.check_tracking(compose_config("tracking.register_model='a/b'"))
    config.check_tracking(compose_config("tracking.register_model=digits_best"))


def _table(rows):
    cols = ["dataset", "model", "setting", "augmentation", "verdict", "delta_test_score", "score_metric",
            "test_score_mean"]
    return pd.DataFrame([dict(zip(cols, ("digits", "small_cnn", "", *r))) for r in rows])


def _finished(scores, val=None, val_loss=None):
    """Finished runs: {augmentation: [test accuracy per seed]}, with best/val_accuracy and best/val_loss per seed
    where given ({augmentation: [...]})."""
    rows = []
    for a, values in scores.items():
        for s, v in enumerate(values):
            row = {"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": a, "seed": s,
                   "run_id": f"{a}-{s}", "metrics.test/accuracy": v}
            if val is not None:
                row["metrics.best/val_accuracy"] = val[a][s]
            if val_loss is not None:
                row["metrics.best/val_loss"] = val_loss[a][s]
            rows.append(row)
    return pd.DataFrame(rows)


def test_choose_takes_the_best_policy_that_helps_not_the_top_test_score():
    table = _table([("rotate", "helps", 0.02, "accuracy", 0.82), ("hflip", "helps", 0.05, "accuracy", 0.85),
                    ("lucky", "undecided", 0.09, "accuracy", 0.89), ("none", "baseline", 0.0, "accuracy", 0.8)])
    scores = {"rotate": [0.8, 0.84], "hflip": [0.86, 0.84, 0.85], "lucky": [0.95, 0.83], "none": [0.8, 0.8]}
    val = {a: [0.8] * len(v) for a, v in scores.items()} | {"hflip": [0.80, 0.83, 0.82]}
    pick = champion.choose(table, _finished(scores, val))
    assert (pick["augmentation"], pick["run_id"], pick["seed"]) == ("hflip", "hflip-1", 1)
    assert "helps" in pick["reason"] and "2 policies that help" in pick["reason"]


def test_the_run_is_chosen_on_validation_and_tagged_with_the_policys_mean_test_score(monkeypatch):
    """Seed 0 has the top test score but the worst validation score: seed 2, the best on validation, is
    registered, and the version's tag holds the mean test score of the three seeds, not seed 2's own."""
    table = _table([("hflip", "helps", 0.05, "accuracy", 0.85), ("none", "baseline", 0.0, "accuracy", 0.8)])
    scores = {"hflip": [0.90, 0.84, 0.83], "none": [0.8, 0.8, 0.8]}
    finished = _finished(scores, {"hflip": [0.81, 0.84, 0.86], "none": [0.8] * 3},
                         {"hflip": [0.5, 0.4, 0.3], "none": [0.5] * 3})
    calls = []

    def register_model(cfg, run_id, name, description="", tags=None):
        calls.append((run_id, tags))
        return type("Version", (), {"version": "1"})(), True
    monkeypatch.setattr(champion.tracking, "register_model", register_model)
    pick = champion.register(None, "digits_best", table, finished)
    assert (pick["run_id"], pick["seed"], pick["val_score"]) == ("hflip-2", 2, 0.86)
    assert pick["score"] == pytest.approx(np.mean(scores["hflip"])) and pick["n_seeds"] == 3
    assert "best validation accuracy of its 3 seeds (0.8600)" in pick["reason"]
    assert "mean test accuracy over its 3 seeds: 0.8567" in pick["reason"]
    [(run_id, tags)] = calls
    assert run_id == "hflip-2" and tags["test_accuracy_mean"] == pytest.approx(0.8567, abs=1e-4)
    assert tags["val_accuracy"] == 0.86 and tags["selected_by"] == "best/val_accuracy"
    # Without best/val_accuracy, the lowest best/val_loss decides; without either, the first seed.
    no_accuracy = finished.drop(columns="metrics.best/val_accuracy")
    assert champion.choose(table, no_accuracy)["run_id"] == "hflip-2"
    fallback = champion.choose(table, no_accuracy.drop(columns="metrics.best/val_loss"))
    assert fallback["run_id"] == "hflip-0" and "no validation score logged" in fallback["reason"]


def test_choose_falls_back_to_none_when_no_policy_helps_and_says_so():
    table = _table([("lucky", "undecided", 0.09, "accuracy", 0.89), ("none", "baseline", 0.0, "accuracy", 0.8),
                    ("rotate", "hurts", -0.05, "accuracy", 0.75)])
    scores = {"lucky": [0.95, 0.83], "none": [0.79, 0.81], "rotate": [0.7, 0.8]}
    pick = champion.choose(table, _finished(scores, {a: [0.8, 0.82] for a in scores}))
    assert (pick["augmentation"], pick["run_id"]) == ("none", "none-1")
    assert pick["reason"].startswith("no policy helps (lucky: undecided, rotate: hurts)")


@pytest.mark.slow
def test_served_model_answers_invocations(logged, tmp_path):
    """`mlflow models serve --env-manager local` on loopback: two uint8 images posted, two rows of probabilities."""
    cfg, run_id, model_uri, test = logged
    port = free_port()
    # The server runs uvicorn from the interpreter's environment, as an activated virtual environment finds it.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.store(cfg.tracking)[0],
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local", "-m",
                               model_uri, "-p", str(port), "-h", "127.0.0.1"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def ready():
            if server.poll() is not None:
                raise AssertionError(f"mlflow models serve exited {server.returncode}: {server.stdout.read()[-3000:]}")
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200
            except OSError:
                return False

        wait_for(ready, 120, "the model server to answer /ping", interval=0.5)
        body = json.dumps({"inputs": test.x[:2].tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        p = np.asarray(answer["predictions"])
        mlflow.set_tracking_uri(tracking.store(cfg.tracking)[0])
        assert p.shape == (2, 10)
        assert np.allclose(p, mlflow.pyfunc.load_model(model_uri).predict(test.x[:2]), atol=1e-5)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_sweep_registers_the_run_the_report_recommends(tmp_path, capsys):
    """A tiny real sweep (none, hflip x 2 seeds) with tracking.register_model: the registered version's run is the
    one the rule picks from the report's own table and the store's runs, and the sweep says which and why."""
    result = run_sweep(tmp_path, "experiment=quick", "trainer.epochs=1", "lenses.corruptions=[]", "lenses.affinity=false",
                       "tracking.register_model=digits_best")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    [version] = client.search_model_versions("name = 'digits_best'")
    table = pd.read_csv(tmp_path / "reports" / "quick" / "summary.csv", keep_default_na=False, na_values=[""])
    helps = table[table["verdict"] == "helps"].sort_values("delta_test_score", ascending=False)
    policy = helps["augmentation"].iloc[0] if len(helps) else "none"
    exp = client.get_experiment_by_name("quick")
    runs = [r for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
            if r.data.tags.get("augmentation") == policy and r.data.tags.get("sweep") != "parent"]
    # The run with the best validation accuracy (ties: the lower validation loss, then the lower seed).
    expected = min(runs, key=lambda r: (-r.data.metrics["best/val_accuracy"], r.data.metrics["best/val_loss"],
                                        int(r.data.tags["seed"])))
    assert len(runs) == 2 and version.run_id == expected.info.run_id
    assert f"registered model digits_best version 1: run {expected.info.run_id}" in result.stdout
    assert ("no policy helps" if policy == "none" else "verdict helps") in version.description
    parent = [r for r in client.search_runs([exp.experiment_id], "tags.sweep = 'parent'")][0]
    assert parent.data.params["registered_run_id"] == expected.info.run_id
    # The registered model predicts through ablation-predict by its registry URI.
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / "a.png")
    cfg = compose_config(f"tracking.uri={store_uri(tmp_path)}")
    csv = predict.predict(cfg.tracking, None, folder, tmp_path / "p.csv", model_uri="models:/digits_best/latest")
    assert len(pd.read_csv(csv)) == 1
    assert f"model models:/digits_best/latest (of run {expected.info.run_id})" in capsys.readouterr().out
