"""kill -9 in the middle of an epoch, then the same sweep again: the finished combination is skipped, the killed
one is marked KILLED and, with trainer.resume=true, continues from its last completed epoch without logging any
epoch twice."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT
from helpers import run_sweep, runs, store_uri, sweep_command, wait_for

EPOCHS = 5
SWEEP = ("seed=0,1", "trainer=smoke", f"trainer.epochs={EPOCHS}", "trainer.steps_per_epoch=60", "trainer.resume=true",
         "dataset.train_size=200", "tracking.log_model=false", "experiment_name=faults")


def _runs(tmp_path: Path, seed=None):
    return runs(store_uri(tmp_path), "faults", f"tags.seed = '{seed}'" if seed is not None else "")


@pytest.mark.slow
def test_kill_9_mid_epoch_then_the_same_sweep_resumes(tmp_path):
    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    backups = Path(os.environ["ABLATION_BACKUP_DIR"])
    proc = subprocess.Popen(sweep_command(tmp_path, *SWEEP, name="first"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)

    def seed1_epochs_done() -> int:
        """Epochs seed=1 has completed while running (its backup says so); 0 before it runs."""
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read()[-2000:]}"
        started = (tmp_path / "mlflow.db").exists()
        running = [r for r in _runs(tmp_path, 1) if r.info.status == "RUNNING"] if started else []
        metadata = list(backups.glob("*/keras/training_metadata.json"))
        if not (running and metadata):
            return 0
        try:
            return int(json.loads(metadata[0].read_text())["epoch"])
        except ValueError:  # Keras is writing it at this moment: read it again next time
            return 0

    try:
        # Wait until seed=1 has completed two epochs, then kill the sweep without warning.
        completed = wait_for(lambda: (done := seed1_epochs_done()) >= 2 and done, 300,
                             "seed=1 to reach its second epoch", interval=0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = [r for r in _runs(tmp_path, 1)]
    assert len(killed) == 1 and killed[0].info.status == "RUNNING"  # nobody could close it
    killed_id = killed[0].info.run_id

    again = run_sweep(tmp_path, *SWEEP, name="second")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skip " in again.stdout  # seed=0 finished before

    seed0 = _runs(tmp_path, 0)
    assert [r.info.status for r in seed0] == ["FINISHED"]
    seed1 = {r.info.run_id: r for r in _runs(tmp_path, 1)}
    assert seed1[killed_id].info.status == "KILLED"
    (resumed,) = [r for r in seed1.values() if r.info.run_id != killed_id]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_from"] == killed_id
    assert int(resumed.data.tags["resumed_at_epoch"]) >= completed
    for metric in ("val/loss", "train/loss", "train_clean/accuracy", "gap/loss"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, metric)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), metric  # every epoch once, none twice
    parents = [r for r in _runs(tmp_path) if r.data.tags.get("sweep") == "parent"]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
    assert not list(backups.glob("*/keras")), "the backup of a finished combination is removed"
