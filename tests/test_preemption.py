"""A job of a cluster launcher preempted in the middle of an epoch: submitit's preemption signal (SIGUSR2, which
SLURM sends before it preempts or times a job out) makes the job checkpoint and requeue itself; the requeued job,
in another process, continues the combination from its last completed epoch (trainer.resume=auto is on under a
cluster launcher), so the combination finishes once, with whole curves, and the sweep ends as if nothing
happened. tests/test_ray.py does the same for a Ray job whose worker dies."""
import signal

import pytest

from helpers import stop_in_third_epoch_and_finish


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_its_run_continues_from_its_last_epoch(tmp_path):
    # SIGUSR2: what SLURM sends a job it is about to preempt or time out (submitit asks for it with --signal).
    preempted, _ = stop_in_third_epoch_and_finish(tmp_path, signal.SIGUSR2, "hydra/launcher=submitit_local",
                                                  "hydra.launcher.timeout_min=10")
    assert "exited in the middle of the run" in preempted.data.tags["error"]
    # submitit's own handler caught the signal (checkpoint, then requeue), not the run's.
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.err"))
    assert "Caught signal SIGUSR2" in logs, logs[-2000:]
