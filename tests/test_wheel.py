"""Installable like any Python tool: the wheel built from this checkout, installed into a fresh virtualenv outside
it, runs `ablation experiment=quick` and `ablation-report` from an empty folder, with its configs from the package
and its outputs in that folder's runs/. Nothing is downloaded: the new environment sees the dependencies already
installed in this one (a .pth line naming their site-packages), never this checkout. The wheel is the
distribution augment-ablation, MIT-licensed, with its LICENSE file."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

# What the wheel is built from (a copy, so building writes nothing into the checkout).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "ablation", "hydra_plugins")
# `ablation` on PyPI is another project: the distribution has a name of its own, the import and commands do not.
DISTRIBUTION = "augment-ablation"
TINY = ["trainer.epochs=1", "dataset.train_size=32", "dataset.image_size=16", "tracking.log_model=false"]


def _check(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    source, dist, venv, work = (tmp_path / name for name in ("src", "dist", "venv", "work"))
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    _check(subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(dist), str(source)], capture_output=True, text=True, timeout=300))
    [wheel] = dist.glob(f"{DISTRIBUTION.replace('-', '_')}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(archive.read(metadata).decode())
        licence = archive.read(metadata.replace("METADATA", "licenses/LICENSE")).decode()
    assert meta["Name"] == DISTRIBUTION
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert licence.startswith("MIT License") and "The ablation authors" in licence

    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True,
                          timeout=120))
    _check(subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                           "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300))
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # A plain path line: this environment's packages become importable, but its own .pth files (the checkout's
    # editable install) are not run.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    scripts = ["ablation", "ablation-report", "ablation-predict", "ablation-expand", "ablation-preview", "ablation-ui"]
    assert all((venv / "bin" / name).is_file() for name in scripts), sorted(p.name for p in (venv / "bin").iterdir())
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABLATION_", "PYTHON"))}
    bin_dir = venv / "bin"
    where = _check(subprocess.run([str(bin_dir / "python"), "-c", "import ablation; print(ablation.__file__)"],
                                  cwd=work, env=env, capture_output=True, text=True, timeout=60))
    assert Path(where.strip()).is_relative_to(venv), f"imported {where.strip()}, not the installed package"

    _check(subprocess.run([str(bin_dir / "ablation"), "experiment=quick", *TINY], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300))
    assert (work / "runs" / "mlflow.db").is_file()
    out = _check(subprocess.run([str(bin_dir / "ablation-report"), "experiment_name=quick"], cwd=work, env=env,
                                capture_output=True, text=True, timeout=300))
    assert (work / "runs" / "reports" / "quick" / "report.html").is_file(), out[-2000:]
    # Everything it wrote is under runs/: the store, the report, Hydra's job folder.
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
