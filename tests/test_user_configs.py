"""A user's own configs through Hydra's search path: `ablation hydra.searchpath=[file://./my_conf]
augmentation=my_policy` finds a policy that is not in the package, the ablation designs expand it from what Hydra
composes (not from the packaged files), and a policy that cannot be found is an error, never a plain grid."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation.core import paths
from ablation.core.errors import ConfigError
from ablation.sweep import designs
from conftest import ROOT

POLICY = """\
name: my_policy
transforms:
  - _target_: albumentations.HorizontalFlip
    p: 0.5
  - _target_: albumentations.Rotate
    limit: 10
    p: 1.0
"""
TINY = ["trainer=smoke", "trainer.epochs=1", "dataset.train_size=32", "dataset.image_size=16",
        "tracking.log_model=false"]
DEFAULTS = OmegaConf.create({"sweep": {"design": "grid"}, "augmentation": {"name": "none"}})


def _user_conf(folder: Path) -> Path:
    (folder / "my_conf" / "augmentation").mkdir(parents=True)
    (folder / "my_conf" / "augmentation" / "my_policy.yaml").write_text(POLICY)
    return folder / "my_conf"


def _ablation(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != paths.HOME_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "ablation", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_designs_expand_a_policy_found_through_the_search_path(tmp_path):
    search = f"hydra.searchpath=[file://{_user_conf(tmp_path)}]"
    jobs = designs.jobs_of([[search, "augmentation=my_policy", "sweep.design=leave_one_out"]], DEFAULTS)
    assert jobs == [[search, "augmentation=none"], [search, "augmentation=my_policy"],
                    [search, "augmentation=my_policy", "++augmentation.variant='-HorizontalFlip'"],
                    [search, "augmentation=my_policy", "++augmentation.variant='-Rotate'"]]


def test_a_policy_that_cannot_be_found_is_an_error_not_a_grid():
    with pytest.raises(ConfigError, match=r"Could not find 'augmentation/my_policy'.*hydra\.searchpath"):
        designs.jobs_of([["augmentation=my_policy", "sweep.design=leave_one_out"]], DEFAULTS)


@pytest.mark.slow
def test_a_leave_one_out_sweep_over_a_policy_of_ones_own(tmp_path):
    _user_conf(tmp_path)
    done = _ablation(tmp_path, "-m", "hydra.searchpath=[file://./my_conf]", "augmentation=my_policy",
                     "sweep.design=leave_one_out", f"paths.home={tmp_path / 'home'}", *TINY, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    children = [r for r in found if r.data.tags.get("sweep") != "parent"]
    trained = sorted(r.data.tags["augmentation"] for r in children)
    assert trained == ["my_policy", "my_policy-HorizontalFlip", "my_policy-Rotate", "none"]
    # Each variant is a policy of its own (its own fingerprint) that lacks the unit it leaves out.
    assert len({r.data.tags["policy_fingerprint"] for r in children}) == 4
    one = next(r for r in children if r.data.tags["augmentation"] == "my_policy-Rotate")
    policy = Path(client.download_artifacts(one.info.run_id, "policy.json", str(tmp_path))).read_text()
    assert "Rotate" not in policy and "HorizontalFlip" in policy
    assert (tmp_path / "home" / "reports" / "digits" / "report.html").is_file()


@pytest.mark.slow
def test_a_sweep_over_a_policy_that_cannot_be_found_stops_before_training(tmp_path):
    # A swept value (a single one is Hydra's own missing-config error, before any sweep starts).
    for design in ("leave_one_out", "grid"):
        done = _ablation(tmp_path, "-m", "augmentation=none,my_policy", f"sweep.design={design}",
                         f"paths.home={tmp_path / 'home'}", *TINY)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2, done.stderr[-3000:]
        assert len(errors) == 1 and "Could not find 'augmentation/my_policy'" in errors[0], done.stderr[-3000:]
        assert "hydra.searchpath" in errors[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits")
    assert experiment is None or not [r for r in client.search_runs([experiment.experiment_id])
                                      if r.data.tags.get("sweep") != "parent"]
