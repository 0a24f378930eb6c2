"""trainer.resume: a combination's training state kept on disk while it trains, so that a run killed in the
middle (kill -9, a lost node, a preempted job) continues from its last completed epoch when the sweep runs again.

runs/backup/<config_hash>/   (or $ABLATION_BACKUP_DIR/<config_hash>/)
  keras/            keras.callbacks.BackupAndRestore: weights, optimizer state and the completed epoch count
  history.json      the per-epoch rows logged so far (the new run repeats them, so its curves are whole)
  best.weights.h5   the best weights by trainer.monitor so far
  run_id            the run that wrote it (the resumed run is tagged resumed_from with it)
The folder is removed when the combination finishes."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras

from ablation import tracking
from ablation.core import paths


def wanted(resume) -> bool:
    """trainer.resume: true, false, or auto: on for a job that its launcher may run again after its process died
    (submitit's requeue, Ray's retry: the job has a launch id, tracking.LAUNCH_ENV), off elsewhere."""
    if resume == "auto":
        return bool(os.environ.get(tracking.LAUNCH_ENV))
    return bool(resume)


class Backup:
    def __init__(self, key: str, root: Path | None = None):
        self.folder = (root or paths.folder("backup")) / key
        self.keras_dir = self.folder / "keras"
        self.best_weights = self.folder / "best.weights.h5"
        self._history = self.folder / "history.json"

    def completed_epochs(self) -> int:
        metadata = self.keras_dir / "training_metadata.json"
        if not metadata.exists():
            return 0
        return int(json.loads(metadata.read_text()).get("epoch", 0))

    def history(self) -> list[dict]:
        """The rows of the completed epochs (a row written just before the process died, for an epoch whose
        weights were not saved, is dropped: that epoch is trained again)."""
        done = self.completed_epochs()
        if not done or not self._history.exists():
            return []
        return [row for row in json.loads(self._history.read_text()) if row["epoch"] <= done]

    def previous_run(self) -> str | None:
        path = self.folder / "run_id"
        return path.read_text().strip() if path.exists() else None

    def start(self, run_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "run_id").write_text(run_id)

    def callbacks(self, rows: list[dict]) -> list[keras.callbacks.Callback]:
        """Put these after the callbacks that log and checkpoint: the epoch counts as completed only once the
        history and the best weights of it are on disk."""
        return [_SaveHistory(self, rows),
                keras.callbacks.BackupAndRestore(str(self.keras_dir), double_checkpoint=True, delete_checkpoint=False)]

    def save_history(self, rows: list[dict]) -> None:
        scratch = self._history.with_suffix(".tmp")
        scratch.write_text(json.dumps(rows))
        os.replace(scratch, self._history)  # atomic: a kill leaves the old or the new file, never half of one

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _SaveHistory(keras.callbacks.Callback):
    def __init__(self, backup: Backup, rows: list[dict]):
        super().__init__()
        self.backup = backup
        self.rows = rows

    def on_epoch_end(self, epoch, logs=None):
        self.backup.save_history(self.rows)
