"""A job of a cluster launcher preempted in the middle of an epoch: SLURM's SIGTERM passes, and submitit's
preemption signal (SIGUSR2, which SLURM sends when it preempts or times a job out) makes the job checkpoint and
requeue itself; the requeued job,
in another process, continues the combination from its last completed epoch (trainer.resume=auto is on under a
cluster launcher), so the combination finishes once, with whole curves, and the sweep ends as if nothing
happened. tests/test_ray.py does the same for a Ray job whose worker dies."""
import signal

import pytest

from helpers import stop_in_third_epoch_and_finish


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_its_run_continues_from_its_last_epoch(tmp_path):
    # What SLURM sends a job it preempts: SIGTERM, which submitit lets pass, and the signal submitit asked for with
    # --signal (SIGUSR2), on which it checkpoints the job and requeues it.
    preempted, _ = stop_in_third_epoch_and_finish(tmp_path, [signal.SIGTERM, signal.SIGUSR2],
                                                  "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert "exited in the middle of the run" in preempted.data.tags["error"]
    assert preempted.data.tags["launch"].startswith("submitit-")  # submitit's job id, the same once requeued
    # submitit's own handler caught the signal (checkpoint, then requeue), not the run's.
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.err"))
    assert "Bypassing signal SIGTERM" in logs and "Caught signal SIGUSR2" in logs, logs[-2000:]


def test_resume_auto_is_on_only_for_a_job_its_launcher_may_run_again(monkeypatch):
    from ablation import tracking
    from ablation.training import backup

    monkeypatch.delenv(tracking.LAUNCH_ENV, raising=False)
    assert (backup.wanted("auto"), backup.wanted(True), backup.wanted(False)) == (False, True, False)
    monkeypatch.setenv(tracking.LAUNCH_ENV, "submitit-123_4")
    assert (backup.wanted("auto"), backup.wanted(False)) == (True, False)
