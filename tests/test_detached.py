"""A sweep whose own process ends after submitting its jobs: the last job to end builds the report and closes the
parent run (under submitit, whose jobs outlive the process that submitted them); `ablation-report
+parent_run_id=...` does the same for a sweep left unclosed, and does nothing more once it is closed."""
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from ablation import tracking
from ablation.sweep import parent
from conftest import ROOT
from helpers import parents_and_children, runs, store_uri, sweep_command, wait_for


def _parent_ended(uri: str) -> bool:
    parents, _ = parents_and_children(runs(uri, "quick"))
    return bool(parents) and parents[0].info.status != "RUNNING"


@pytest.mark.slow
def test_the_last_job_builds_the_report_when_the_submitter_was_killed(tmp_path):
    uri = store_uri(tmp_path)
    process = subprocess.Popen(sweep_command(tmp_path, "experiment=quick", "seed=0", "trainer.epochs=1",
                                             "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    submitted = tmp_path / "sweep" / ".submitit"
    try:
        wait_for(lambda: process.poll() is None and len(list(submitted.glob("*/*_submitted.pkl"))) == 2, 240,
                 "both jobs to be submitted", interval=0.5)
    finally:
        # The sweep's own process only: its jobs (submitit's processes) go on, as they would on a cluster.
        process.send_signal(signal.SIGKILL)
        process.wait()  # reaped: its pid no longer names a process
    wait_for(lambda: _parent_ended(uri), 400, "the last job to close the sweep's parent run", interval=2)

    [sweep], children = parents_and_children(runs(uri, "quick"))
    assert sweep.info.status == "FINISHED", sweep.data.tags.get("error")
    assert sweep.data.tags[tracking.orphan.CLAIM_TAG].startswith("the job on ")
    assert sorted(r.info.run_name for r in children) == ["hflip/small_cnn/s0", "none/small_cnn/s0"]
    assert {r.info.status for r in children} == {"FINISHED"}
    # The report, as the sweep's end would have made it: its files, on the parent run, and the decision as its note.
    assert {"summary.csv", "report.html"} <= {p.name for p in (tmp_path / "reports" / "quick").iterdir()}
    logged = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(sweep.info.run_id, "quick")}
    assert "quick/summary.csv" in logged
    assert "hflip" in sweep.data.tags["mlflow.note.content"]
    assert sweep.data.metrics["sweep/trained"] == 2 and sweep.data.params["sweep_size"] == "2"


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_ablation_report_closes_an_orphaned_sweep_once_every_combination_ended(make_cfg, monkeypatch):
    from ablation.training.plan import plan
    from ablation.training.run import run

    cfg = make_cfg("experiment_name=orphan", "augmentation=none")
    parent_id = tracking.open_parent(cfg, {"overrides": "augmentation=none,hflip"})
    jobs = [make_cfg("experiment_name=orphan", f"augmentation={name}") for name in ("none", "hflip")]
    keys = [plan(job).key for job in jobs]  # as the sweeper records them
    tracking.describe_sweep(cfg, parent_id, keys, [["augmentation=none"], ["augmentation=hflip"]])
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, parent_id)
    run(jobs[0])
    client = MlflowClient(tracking_uri=cfg.tracking.uri)

    # While the sweep's process lives, nothing but that process closes it.
    assert not parent.finish_detached(cfg, parent_id, who="ablation-report")
    # Its process is gone (the parent's pid names no process), but one combination has not ended: left open.
    client.set_tag(parent_id, "pid", str(_dead_pid()))
    assert not parent.finish_detached(cfg, parent_id, who="ablation-report")
    assert client.get_run(parent_id).info.status == "RUNNING"
    assert tracking.orphan.progress(cfg.tracking, client.get_run(parent_id), keys) == {
        "left": 1, "finished": 1, "trained": 1, "failed": 0}

    run(jobs[1])
    assert parent.finish_detached(cfg, parent_id, who="ablation-report")
    closed = client.get_run(parent_id)
    assert closed.info.status == "FINISHED"
    assert closed.data.tags[tracking.orphan.CLAIM_TAG] == "ablation-report"
    assert closed.data.metrics["sweep/trained"] == 2 and "mlflow.note.content" in closed.data.tags
    # Again: nothing more to do.
    assert not parent.finish_detached(cfg, parent_id, who="ablation-report")


def test_a_claim_held_by_another_is_refused(make_cfg):
    cfg = make_cfg("experiment_name=claims")
    parent_id = tracking.open_parent(cfg, {"overrides": "(none)"})
    assert tracking.orphan.claim(cfg.tracking, parent_id, "job a")
    assert not tracking.orphan.claim(cfg.tracking, parent_id, "job b")
    assert tracking.orphan.claim(cfg.tracking, parent_id, "job a")
    tracking.close_parent(cfg, parent_id, "FINISHED")
