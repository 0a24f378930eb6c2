"""The embedded SQLite store under parallel writers: no run and no metric point lost."""
import multiprocessing

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
