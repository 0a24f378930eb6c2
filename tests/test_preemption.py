"""A job of a cluster launcher preempted in the middle of an epoch: submitit's preemption signal (SIGUSR2, which
SLURM sends before it preempts or times a job out) makes the job checkpoint and requeue itself; the requeued job,
in another process, continues the combination from its last completed epoch (trainer.resume=auto is on under a
cluster launcher), so the combination finishes once, with whole curves, and the sweep ends as if nothing
happened. tests/test_ray.py does the same for a Ray job whose worker dies."""
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from helpers import (
    PREEMPTED,
    PREEMPTED_EPOCHS,
    parents_and_children,
    resumed_whole,
    runs,
    store_uri,
    sweep_command,
    training_epochs,
    wait_for,
)


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_its_run_continues_from_its_last_epoch(tmp_path):
    uri = store_uri(tmp_path)
    backups = Path(os.environ["ABLATION_BACKUP_DIR"])
    proc = subprocess.Popen(sweep_command(tmp_path, *PREEMPTED, "hydra/launcher=submitit_local",
                                          "hydra.launcher.timeout_min=10"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid, completed = wait_for(lambda: training_epochs(uri, "preempted", backups, proc), 300,
                                  "the job to complete two epochs", interval=0.1)
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends a job it is about to preempt (submitit's --signal)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]

    [sweep], children = parents_and_children(runs(uri, "preempted"))
    assert sweep.info.status == "FINISHED"
    preempted, _ = resumed_whole(uri, children, completed, PREEMPTED_EPOCHS)
    assert "exited in the middle of the run" in preempted.data.tags["error"]
    # submitit's own handler caught the signal (checkpoint, then requeue), not the run's.
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.err"))
    assert "Caught signal SIGUSR2" in logs, logs[-2000:]
    assert not list(backups.glob("*/keras")), "the backup of a finished combination is removed"
