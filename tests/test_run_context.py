"""What a run tells MLflow about where it comes from and what it read: MLflow's context tags (user, source, git
commit), the library versions, and its splits as MLflow datasets (the runs table's Dataset column)."""
import importlib.metadata
import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from ablation import tracking
from ablation.training.run import run
from conftest import ROOT, compose_config, store_overrides


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two one-epoch runs that differ only in how much training data they read."""
    store = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    found = []
    for size in (48, 64):
        cfg = compose_config("trainer.epochs=1", f"dataset.train_size={size}", "lenses.corruptions=[]",
                             "tracking.log_model=false", *store_overrides(store))
        found.append(client.get_run(run(cfg)["run_id"]))
    return client, found


def test_runs_carry_mlflow_context_tags_and_library_versions(two_runs):
    _, (mlrun, _) = two_runs
    tags = mlrun.data.tags
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert tags["mlflow.user"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # run from a git checkout (the tests always are, but an sdist is not)
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert tags["version.ablation"] == importlib.metadata.version("augment-ablation")
    for name in ("keras", "albumentations", "mlflow"):
        assert tags[f"version.{name}"] == importlib.metadata.version(name)
    # The run's own tags are not overridden by the context.
    assert tags["dataset"] == "digits" and tags["mlflow.runName"] == mlrun.info.run_name


def test_each_split_is_an_mlflow_dataset_whose_digest_follows_the_data(two_runs):
    client, (small, large) = two_runs
    inputs = {run.info.run_id: client.get_run(run.info.run_id).inputs.dataset_inputs for run in (small, large)}
    splits = {}
    for run_id, found in inputs.items():
        splits[run_id] = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset for d in found}
        assert set(splits[run_id]) == {"train", "validation", "test"}
        for dataset in splits[run_id].values():
            assert dataset.name == "digits" and dataset.source_type == "code"
            assert json.loads(dataset.source)["tags"]["mlflow.source.name"] == "ablation.datasets.load_digits"
    first, second = splits[small.info.run_id], splits[large.info.run_id]
    assert json.loads(first["train"].profile)["features_shape"] == [48, 32, 32, 1]
    assert json.loads(second["train"].profile)["features_shape"] == [64, 32, 32, 1]
    assert first["train"].digest != second["train"].digest  # other data, other digest
    assert len({d.digest for d in first.values()}) == 3  # each split its own


def test_a_folder_dataset_names_its_path_as_source(tmp_path):
    from ablation.tracking import inputs

    class Split:
        x = __import__("numpy").zeros((3, 8, 8, 3), "uint8")
        y = __import__("numpy").zeros(3, "int64")

    found = inputs.records("folder", "abc", str(tmp_path), {"train": Split()})
    assert found[0]["source_type"] == "local" and str(tmp_path) in found[0]["source"]
    assert found[0]["context"] == "train"


def test_datasets_kept_in_a_journal_are_sent_when_it_is_replayed(make_cfg, tmp_path, monkeypatch):
    """A run whose server was away keeps its datasets in its journal; replay sends them like the rest."""
    from ablation.tracking import inputs, journal, replay

    class Split:
        x = __import__("numpy").zeros((2, 8, 8, 1), "uint8")
        y = __import__("numpy").zeros(2, "int64")

    cfg = make_cfg("experiment_name=journal")
    client = tracking.client(cfg.tracking)
    uri = tracking.store(cfg.tracking)[0]
    run_id = client.create_run(tracking.experiment_id(client, cfg.tracking, "journal")).info.run_id
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path / "home"))
    folder = journal.unsent_root() / run_id
    folder.mkdir(parents=True)
    (folder / "store.json").write_text(json.dumps({"uri": uri, "run_id": run_id, "error": "gone"}))
    entry = {"kind": "inputs", "datasets": inputs.records("digits", "k", "ablation.datasets.load_digits",
                                                          {"test": Split()})}
    (folder / "journal.jsonl").write_text(json.dumps(entry) + "\n")
    assert replay.replay_unsent(uri) == [run_id]
    [sent] = client.get_run(run_id).inputs.dataset_inputs
    assert sent.dataset.name == "digits" and sent.tags[0].value == "test"


def test_the_evaluation_batch_size_changes_no_result_and_no_combination(tmp_path):
    """trainer.eval_batch_size only sets how many steps validation, test and the clean subset take: the same
    scores to float precision, and the same combination (a finished run is not trained again)."""
    from ablation import augment

    found = []
    for size in ("null", "256"):
        cfg = compose_config("trainer.epochs=2", "dataset.train_size=64", "lenses.corruptions=[]",
                             "tracking.log_model=false", f"trainer.eval_batch_size={size}", "sweep.rerun=true",
                             *store_overrides(tmp_path))
        found.append((run(cfg), tracking.config_hash(cfg, augment.build(cfg.augmentation).fingerprint)))
    (small, key_small), (large, key_large) = found
    assert key_small == key_large
    for metric in ("test/accuracy", "test/loss", "best/val_loss", "best/gap_loss"):
        assert abs(small[metric] - large[metric]) < 1e-4, metric


def test_a_bad_evaluation_batch_size_names_the_key():
    from ablation.training.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"^trainer\.eval_batch_size: expected an integer >= 1"):
        validate(compose_config("trainer.eval_batch_size=0"))
