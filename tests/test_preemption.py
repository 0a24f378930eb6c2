"""A job of a cluster launcher preempted in the middle of an epoch: submitit's preemption signal (SIGUSR2, which
SLURM sends before it preempts or times a job out) makes the job checkpoint and requeue itself; the requeued job,
in another process, continues the combination from its last completed epoch (trainer.resume=auto is on under a
cluster launcher), so the combination finishes once, with whole curves, and the sweep ends as if nothing
happened."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT
from helpers import parents_and_children, runs, store_uri, sweep_command, wait_for

EPOCHS = 5
SWEEP = ("augmentation=none", "seed=0", "trainer=smoke", f"trainer.epochs={EPOCHS}", "trainer.steps_per_epoch=60",
         "dataset.train_size=200", "experiment_name=preempted", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=10")


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_its_run_continues_from_its_last_epoch(tmp_path):
    uri = store_uri(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    backups = Path(os.environ["ABLATION_BACKUP_DIR"])
    proc = subprocess.Popen(sweep_command(tmp_path, *SWEEP), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def training() -> tuple[int, int] | None:
        """(the training job's pid, the epochs its backup holds) once it has completed two; None before."""
        assert proc.poll() is None, f"the sweep ended before its job was preempted: {proc.stderr.read()[-2000:]}"
        running = [r for r in runs(uri, "preempted") if r.info.status == "RUNNING" and "config_hash" in r.data.tags]
        metadata = list(backups.glob("*/keras/training_metadata.json"))
        if not (running and metadata):
            return None
        try:
            done = int(json.loads(metadata[0].read_text())["epoch"])
        except ValueError:  # Keras is writing it at this moment
            return None
        return (int(running[0].data.tags["pid"]), done) if done >= 2 else None

    try:
        pid, completed = wait_for(training, 300, "the job to complete two epochs", interval=0.1)
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends a job it is about to preempt (submitit's --signal)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]

    [sweep], children = parents_and_children(runs(uri, "preempted"))
    assert sweep.info.status == "FINISHED"
    by_status = {r.info.status: r for r in children}
    assert sorted(r.info.status for r in children) == ["FINISHED", "KILLED"], by_status
    preempted, resumed = by_status["KILLED"], by_status["FINISHED"]
    assert "exited in the middle of the run" in preempted.data.tags["error"]
    assert resumed.data.tags["pid"] != preempted.data.tags["pid"]  # requeued: another process
    assert resumed.data.tags["resumed_from"] == preempted.info.run_id
    assert int(resumed.data.tags["resumed_at_epoch"]) >= completed
    for metric in ("val/loss", "train/loss", "gap/loss"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, metric)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), metric  # every epoch once, none twice
    # submitit's own handler caught the signal (checkpoint, then requeue), not the run's.
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.err"))
    assert "Caught signal SIGUSR2" in logs, logs[-2000:]
    assert not list(backups.glob("*/keras")), "the backup of a finished combination is removed"
