"""The embedded SQLite store under parallel writers: no run and no metric point lost."""
import multiprocessing

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation import tracking

EPOCHS = 25
KEYS = [f"m/{i}" for i in range(8)]


def _job(cfg_yaml: str, seed: int) -> None:
    cfg = OmegaConf.create(cfg_yaml)
    with tracking.run(cfg, f"job/s{seed}", {"seed": seed}) as tracker:
        for epoch in range(1, EPOCHS + 1):
            tracker.log_metrics({k: epoch * 0.1 + seed for k in KEYS}, step=epoch, wait=epoch % 2 == 0)


@pytest.mark.slow
def test_four_parallel_jobs_lose_no_run_and_no_metric_point(make_cfg):
    cfg = make_cfg("experiment_name=parallel")
    tracking.experiment_id(tracking.client(cfg.tracking), cfg.tracking, "parallel")  # schema + WAL, once
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=_job, args=(OmegaConf.to_yaml(cfg, resolve=True), seed)) for seed in range(4)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0, 0, 0, 0]
    client = MlflowClient(tracking_uri=tracking.store(cfg.tracking)[0])
    runs = client.search_runs([client.get_experiment_by_name("parallel").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"job/s{s}" for s in range(4)]
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        for key in KEYS:
            assert sorted(m.step for m in client.get_metric_history(r.info.run_id, key)) == list(range(1, EPOCHS + 1))
    import sqlite3

    path = tracking.sqlite_path(cfg.tracking.uri)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _ended_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_runs_left_running_by_dead_processes_are_killed_and_live_ones_left(make_cfg):
    import os
    import socket
    import subprocess
    import sys
    import threading

    cfg = make_cfg("experiment_name=orphans")
    client = tracking.client(cfg.tracking)
    exp_id = tracking.experiment_id(client, cfg.tracking, "orphans")
    parent = client.create_run(exp_id, run_name="sweep/orphans").info.run_id
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    slow_to_end = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    threading.Thread(target=slow_to_end.wait, daemon=True).start()  # reaped when it exits, as a launcher would
    try:
        def child(name, pid, on_host=host, key="k0"):
            tags = {"mlflow.parentRunId": parent, "host": on_host, "pid": str(pid), "config_hash": key}
            return client.create_run(exp_id, run_name=name, tags=tags).info.run_id

        ids = {"dead": child("dead", _ended_pid()), "alive": child("alive", live.pid),
               "ends-within-grace": child("ends-within-grace", slow_to_end.pid),
               "elsewhere": child("elsewhere", _ended_pid(), on_host="another-machine"),
               "this-process": child("this-process", os.getpid())}  # a job the basic launcher ran here
        marked = tracking.close_dead_children(cfg, parent, grace_s=8)
        assert sorted(marked) == ["dead", "ends-within-grace", "this-process"]
        status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
        assert status == {"dead": "KILLED", "alive": "RUNNING", "ends-within-grace": "KILLED", "elsewhere": "RUNNING",
                          "this-process": "KILLED"}
        assert "interrupted" in client.get_run(ids["dead"]).data.tags["error"]

        # Rerunning a combination: its run whose process is alive elsewhere on this machine is not taken for dead;
        # one whose process has ended is.
        same = {"alive": child("same-alive", live.pid, key="k1"), "dead": child("same-dead", _ended_pid(), key="k1")}
        assert tracking.finished_run(cfg, "k1") is None
        assert client.get_run(same["alive"]).info.status == "RUNNING"
        assert client.get_run(same["dead"]).info.status == "KILLED"
    finally:
        live.kill()
        live.wait()


def test_every_run_names_its_host_and_process(make_cfg):
    import os
    import socket

    cfg = make_cfg("experiment_name=tags")
    with tracking.run(cfg, "one", {"seed": 0}) as tracker:
        run_id = tracker.run_id
    tags = tracking.client(cfg.tracking).get_run(run_id).data.tags
    assert (tags["host"], tags["pid"]) == (socket.gethostname(), str(os.getpid()))
