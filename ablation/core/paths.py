"""Where outputs go. One home folder holds them all: `runs/` in the working directory, or $ABLATION_HOME when set.
Under it, a folder per kind of output; each can be moved on its own with its environment variable, which is how
the `paths` config group reaches code that is not handed a config (configure())."""
from __future__ import annotations

import os
from pathlib import Path

# The configs that ship inside the package (Hydra's primary config folder for every command).
CONF = Path(__file__).resolve().parent.parent / "conf"
HOME_ENV = "ABLATION_HOME"
# Folder under the home -> the environment variable that moves it elsewhere (None: it moves with the home only).
FOLDERS = {
    "cache": "ABLATION_CACHE_DIR",        # decoded datasets (rebuilt on demand)
    "expanded": "ABLATION_EXPANDED_DIR",  # offline expansions (rebuilt on demand)
    "synthetic": "ABLATION_SYNTHETIC_DIR",  # generated training images (augmentation.synthetic; rebuilt on demand)
    "backup": "ABLATION_BACKUP_DIR",      # per-epoch backups of runs that resume
    "unsent": "ABLATION_UNSENT_DIR",      # journals of runs whose tracking server went away
    "reports": "ABLATION_REPORTS_DIR",    # report.html, tables and plots per experiment
    "previews": "ABLATION_PREVIEWS_DIR",  # policy preview grids
    "predictions": "ABLATION_PREDICTIONS_DIR",
}
STORE = "mlflow.db"  # the local MLflow store (SQLite), with its artifacts beside it


def home() -> Path:
    # Read at every call, so an environment set after import (a test, a launcher's job) takes effect.
    return Path(os.environ.get(HOME_ENV) or "runs").expanduser().absolute()


def folder(name: str) -> Path:
    """The folder for one kind of output (a key of FOLDERS)."""
    configured = os.environ.get(FOLDERS[name])
    return Path(configured).expanduser().absolute() if configured else home() / name


def store_file() -> Path:
    return home() / STORE


def configure(paths) -> None:
    """Apply a `paths` config node: its set entries become the environment variables above, so this process and
    the jobs it starts (launchers copy the environment) write where the config says."""
    if paths is None:
        return
    if paths.get("home"):
        os.environ[HOME_ENV] = str(Path(str(paths.home)).expanduser().absolute())
    for name, variable in FOLDERS.items():
        if paths.get(name):
            os.environ[variable] = str(Path(str(paths[name])).expanduser().absolute())
