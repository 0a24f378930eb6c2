"""The `paths` config group: every output folder under one home (runs/ in the working directory, $ABLATION_HOME,
or paths.home), each movable on its own; the config wins over the environment, and where outputs go is no part
of a combination's identity."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablation import tracking
from ablation.core import paths
from ablation.report import build as report
from conftest import ROOT, options


@pytest.fixture
def clean_env(monkeypatch):
    """The home and folder variables unset for the test and restored after it (configure() writes them)."""
    for variable in (paths.HOME_ENV, *paths.FOLDERS.values()):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_the_group_names_every_folder(make_cfg):
    assert options("paths") == ["default"]
    cfg = make_cfg()
    assert set(cfg.paths) == {"home", *paths.FOLDERS}
    assert all(cfg.paths[name] is None for name in paths.FOLDERS)


def test_config_wins_over_the_environment_which_wins_over_the_default(clean_env, tmp_path, make_cfg):
    assert make_cfg().paths.home == "runs"
    assert paths.home() == Path("runs").absolute()
    clean_env.setenv(paths.HOME_ENV, str(tmp_path / "env_home"))
    clean_env.setenv(paths.FOLDERS["cache"], str(tmp_path / "env_cache"))
    cfg = make_cfg()
    assert cfg.paths.home == str(tmp_path / "env_home")
    paths.configure(cfg.paths)
    assert paths.folder("cache") == tmp_path / "env_cache"
    assert paths.folder("reports") == tmp_path / "env_home" / "reports"
    paths.configure(make_cfg(f"paths.home={tmp_path / 'home'}", f"paths.cache={tmp_path / 'cache'}").paths)
    assert paths.store_file() == tmp_path / "home" / "mlflow.db"
    assert paths.folder("cache") == tmp_path / "cache"
    assert paths.folder("unsent") == tmp_path / "home" / "unsent"


def test_where_outputs_go_changes_no_identity(make_cfg):
    default = make_cfg()
    moved = make_cfg("paths.home=/elsewhere", "paths.cache=/scratch/cache")
    assert tracking.config_hash(moved, "fp") == tracking.config_hash(default, "fp")
    # Nor does it set runs apart in the report.
    keys = [key for key in tracking.flatten(moved) if key.startswith("paths.")]
    assert keys and all(key.startswith(report.NOT_SETTINGS) for key in keys)


@pytest.mark.slow
def test_a_run_writes_everything_under_paths_home(tmp_path):
    """`ablation paths.home=HOME` from another folder: the store, its artifacts, the decoded-data cache and
    Hydra's job folder land under HOME, and nothing in the working directory."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != paths.HOME_ENV and k not in paths.FOLDERS.values()}
    env["PYTHONPATH"] = str(ROOT)  # the checkout's package, whatever is installed
    done = subprocess.run([sys.executable, "-m", "ablation", f"paths.home={home}", "trainer=smoke", "trainer.epochs=1",
                           "dataset.train_size=32", "dataset.image_size=16", "tracking.log_model=false"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (home / "mlflow.db").is_file()
    assert any((home / "artifacts").rglob("*")), "the run's artifacts are beside the store"
    assert any((home / "cache").iterdir()), "the decoded dataset is cached under the home"
    assert list((home / "hydra").rglob("ablation.log")), "Hydra's job folder is under the home"
    assert list(work.iterdir()) == []
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert [r.info.status for r in found] == ["FINISHED"]
