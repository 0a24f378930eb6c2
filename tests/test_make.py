"""Make targets that delete: `make clean` removes only what can be rebuilt; the MLflow store and every result go
only with `make clean-runs`, which says what it deletes."""
import shutil
import subprocess

import pytest

from conftest import ROOT


def _project(tmp_path):
    """A copy of the Makefile and scripts with a runs/ folder holding results and rebuildable caches."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    files = ["runs/mlflow.db", "runs/reports/exp/summary.csv", "runs/artifacts/1/a/model.keras", "runs/.gitkeep",
             "runs/cache/digits-abc/x.npy", "runs/expanded/e/train/a.png", "pkg/__pycache__/m.pyc", "build/lib/x.py"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    return tmp_path


def _make(folder, target):
    return subprocess.run(["make", "-s", target], cwd=folder, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_clean_keeps_the_store_and_results_and_removes_what_can_be_rebuilt(tmp_path):
    folder = _project(tmp_path)
    result = _make(folder, "clean")
    assert result.returncode == 0, result.stderr
    for kept in ("runs/mlflow.db", "runs/reports/exp/summary.csv", "runs/artifacts/1/a/model.keras"):
        assert (folder / kept).exists(), kept
    for gone in ("runs/cache", "runs/expanded", "pkg/__pycache__", "build"):
        assert not (folder / gone).exists(), gone


@pytest.mark.slow
def test_clean_runs_says_what_it_deletes_and_deletes_it(tmp_path):
    folder = _project(tmp_path)
    result = _make(folder, "clean-runs")
    assert result.returncode == 0, result.stderr
    assert "runs/mlflow.db" in result.stdout and "deleting" in result.stdout
    assert sorted(p.name for p in (folder / "runs").iterdir()) == [".gitkeep"]
