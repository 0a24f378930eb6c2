"""Reading many runs back (ablation/tracking/bulk.py): the report's histories read in bulk are the very rows the
per-run loop read, from a SQLite store and from a real `mlflow server`; every run of an experiment is read
however many pages it takes."""
import os

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from ablation import tracking
from ablation.core.names import KEYS
from ablation.report import build as report
from ablation.tracking import bulk
from conftest import compose_config, store_overrides
from helpers import mlflow_server

EPOCHS = 5


def _log_runs(client: MlflowClient, experiment: str, n: int) -> None:
    """n finished runs as run.py records them: the curves the report reads over EPOCHS epochs (val/accuracy
    too, and monitored, in every other run), a test score, and one epoch logged twice (a resumed run)."""
    exp_id = client.create_experiment(experiment)
    for i in range(n):
        run = client.create_run(exp_id, run_name=f"p{i % 3}/small_cnn/s{i}", tags={
            "dataset": "digits", "model": "small_cnn", "augmentation": f"p{i % 3}", "seed": str(i),
            "config_hash": f"h{i}"})
        metrics = [Metric("test/accuracy", 0.9 - i / 100, 0, 0)]
        for epoch in range(1, EPOCHS + 1):
            metrics += [Metric("train_clean/loss", 1 / epoch + i, 1000 + epoch, epoch),
                        Metric("val/loss", 1.5 / epoch + i, 1000 + epoch, epoch),
                        Metric("val/accuracy", 0.5 + epoch / 20, 1000 + epoch, epoch)]
        metrics.append(Metric("val/loss", 9.0 + i, 2000, 3))  # epoch 3 again, after a resume
        monitor = "val_accuracy" if i % 2 else "val_loss"
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("trainer.monitor", monitor)])
        client.set_terminated(run.info.run_id, "FINISHED")


def _serial(uri: str, finished: pd.DataFrame) -> pd.DataFrame:
    """The report's histories as it read them before: one get_metric_history per run and metric, in turn."""
    client = MlflowClient(tracking_uri=uri)
    rows = []
    for run in finished.itertuples(index=False):
        info = dict(zip(finished.columns, run))
        monitored = info.get("params.trainer.monitor") == "val_accuracy"
        for metric in (m for m in report.CURVE_METRICS if m != "val/accuracy" or monitored):
            for point in client.get_metric_history(info["run_id"], metric):
                rows.append({"run_id": info["run_id"], **{k: info[k] for k in KEYS}, "seed": info["seed"],
                             "metric": metric, "epoch": point.step, "value": point.value})
    return pd.DataFrame(rows, columns=["run_id", *KEYS, "seed", "metric", "epoch", "value"])


def _points(histories: list[list]) -> list[list[tuple]]:
    return [[(m.key, m.value, m.timestamp, m.step) for m in points] for points in histories]


def test_histories_read_in_bulk_are_the_rows_read_run_by_run(tmp_path):
    cfg = compose_config(*store_overrides(tmp_path), "experiment_name=bulk")
    _log_runs(MlflowClient(tracking_uri=cfg.tracking.uri), "bulk", 6)
    finished, _, _ = report.runs_of(cfg)
    assert len(finished) == 6
    read = report.histories(cfg, finished)
    pd.testing.assert_frame_equal(read, _serial(cfg.tracking.uri, finished))
    assert len(read) == 6 * (2 * EPOCHS + 1) + 3 * EPOCHS  # the relogged epoch kept; val/accuracy where monitored
    wanted = [(r, m) for r in finished["run_id"] for m in report.CURVE_METRICS]
    # Threads over the same store: the same points, in the same order.
    assert _points(tracking.histories(cfg.tracking, wanted, workers=4)) == \
        _points(tracking.histories(cfg.tracking, wanted, workers=1))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlflow server` on a free loopback port over its own SQLite store; stopped at the end."""
    folder = tmp_path_factory.mktemp("bulk-server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with mlflow_server(folder, env=env, workers=2) as uri:
        yield uri


@pytest.mark.slow
def test_histories_from_a_server_read_concurrently_are_the_rows_read_run_by_run(server, tmp_path):
    cfg = compose_config(f"tracking.uri={server}", "experiment_name=bulk_server")
    assert bulk.workers_for(server) == bulk.WORKERS > 1
    _log_runs(MlflowClient(tracking_uri=server), "bulk_server", 7)
    finished, _, _ = report.runs_of(cfg)
    assert len(finished) == 7
    pd.testing.assert_frame_equal(report.histories(cfg, finished), _serial(server, finished))


def test_every_run_is_read_however_many_pages_it_takes(tmp_path):
    cfg = compose_config(*store_overrides(tmp_path), "experiment_name=pages")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    _log_runs(client, "pages", 7)
    exp_id = client.get_experiment_by_name("pages").experiment_id
    one_page = client.search_runs([exp_id], max_results=1000)
    assert [r.info.run_id for r in bulk.all_runs(client, [exp_id], page_size=3)] == \
        [r.info.run_id for r in one_page]  # three pages, the order of a single search
    mlflow.set_tracking_uri(cfg.tracking.uri)
    expected = mlflow.search_runs(experiment_names=["pages"], max_results=None)
    paged = tracking.load_runs(cfg.tracking, "pages", page_size=2)
    assert len(paged) == 7
    pd.testing.assert_frame_equal(paged[sorted(paged.columns)], expected[sorted(expected.columns)])
    assert tracking.load_runs(cfg.tracking, "absent").empty
