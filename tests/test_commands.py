"""Every command is a Hydra app (the console scripts of pyproject.toml): --help says what it does and how it is
called, --cfg job shows its own settings, and the side commands write no Hydra output folder or log file."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# Console script -> (module, what --help and --cfg job show of its own).
COMMANDS = {
    "ablation": ("ablation.cli.train", ["augmentation", "seed: 0"]),
    "ablation-report": ("ablation.cli.report", ["experiment_name=NAME", "correction: bh"]),
    "ablation-predict": ("ablation.cli.predict", ["run_id=RUN_ID|model_uri=models:/NAME/latest data=FOLDER", "run_id: null", "batch_size: 64"]),
    "ablation-expand": ("ablation.cli.expand", ["copies=4", "copies: null"]),
    "ablation-preview": ("ablation.cli.preview", ["augmentation=POLICY", "'n': 8"]),  # n: quoted, YAML 1.1's "no"
    "ablation-ui": ("ablation.cli.ui", ["port=5000", "port: 5000", "host: 127.0.0.1"]),
}


def _run(folder, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=folder, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_every_console_script_is_listed():
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, re.M))
    assert set(scripts) == set(COMMANDS)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert module == COMMANDS[name][0] and function == "main"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_and_cfg_job(name, tmp_path):
    module, shown = COMMANDS[name]
    helped = _run(tmp_path, module, "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "== Configuration groups ==" in helped.stdout and "augmentation: " in helped.stdout
    config = _run(tmp_path, module, "--cfg", "job")
    assert config.returncode == 0, config.stderr[-2000:]
    for text in shown:
        assert text in helped.stdout + config.stdout, f"{name}: {text!r} not shown"
    assert list(tmp_path.iterdir()) == [], "--help and --cfg job write nothing"


@pytest.mark.slow
def test_a_missing_keras_backend_is_one_line_before_keras_loads(tmp_path):
    """TensorFlow and JAX are extras: with the backend Keras would load not installed, `ablation` says which
    extra to install, in one line, instead of Keras' traceback."""
    result = subprocess.run([sys.executable, "-m", "ablation", "trainer=smoke"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "KERAS_BACKEND": "no_such_backend"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: no Keras backend: no_such_backend (KERAS_BACKEND) is not installed; pip install "
        "'augment-ablation[tensorflow]' (or [jax], with KERAS_BACKEND=jax)"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"ablation"}))  # ablation: tests/test_config.py
def test_a_renamed_key_is_one_line_naming_its_replacement(name, tmp_path):
    result = _run(tmp_path, COMMANDS[name][0], "augmentation.where=device")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: augmentation.where: renamed to augmentation.placement; use augmentation.placement=device"]
    assert list(tmp_path.iterdir()) == []
