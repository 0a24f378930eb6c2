"""kill -9 in the middle of an epoch, then the same sweep again: the finished combination is skipped, the killed
one is marked KILLED and, with trainer.resume=true, continues from its last completed epoch without logging any
epoch twice."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT

EPOCHS = 5


def _sweep(tmp_path: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "ablation", "-m", "seed=0,1", "trainer=smoke", f"trainer.epochs={EPOCHS}",
            "trainer.steps_per_epoch=60", "trainer.resume=true", "dataset.train_size=200", "tracking.log_model=false",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'artifacts'}",
            "experiment_name=faults", f"hydra.sweep.dir={tmp_path / name}"]


def _runs(client, seed=None):
    exp = client.get_experiment_by_name("faults")
    query = f"tags.seed = '{seed}'" if seed is not None else ""
    return client.search_runs([exp.experiment_id], query) if exp else []


@pytest.mark.slow
def test_kill_9_mid_epoch_then_the_same_sweep_resumes(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    backups = Path(os.environ["ABLATION_BACKUP_DIR"])
    proc = subprocess.Popen(_sweep(tmp_path, "first"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    completed = 0
    try:
        # Wait until seed=1 has completed two epochs (its backup says so), then kill the sweep without warning.
        while time.time() < deadline and proc.poll() is None:
            running = [r for r in _runs(client, 1) if r.info.status == "RUNNING"] if (tmp_path / "mlflow.db").exists() else []
            metadata = list(backups.glob("*/keras/training_metadata.json"))
            if running and metadata:
                completed = int(__import__("json").loads(metadata[0].read_text())["epoch"])
                if completed >= 2:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert completed >= 2, "seed=1 never reached its second epoch"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = [r for r in _runs(client, 1)]
    assert len(killed) == 1 and killed[0].info.status == "RUNNING"  # nobody could close it
    killed_id = killed[0].info.run_id

    again = subprocess.run(_sweep(tmp_path, "second"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skip " in again.stdout  # seed=0 finished before

    seed0 = _runs(client, 0)
    assert [r.info.status for r in seed0] == ["FINISHED"]
    seed1 = {r.info.run_id: r for r in _runs(client, 1)}
    assert seed1[killed_id].info.status == "KILLED"
    (resumed,) = [r for r in seed1.values() if r.info.run_id != killed_id]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["resumed_from"] == killed_id
    assert int(resumed.data.tags["resumed_at_epoch"]) >= completed
    for metric in ("val/loss", "train/loss", "train_clean/accuracy", "gap/loss"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, metric)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), metric  # every epoch once, none twice
    parents = [r for r in _runs(client) if r.data.tags.get("sweep") == "parent"]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
    assert not list(backups.glob("*/keras")), "the backup of a finished combination is removed"
