"""Reading many runs back at once, through MLflow's public client only: every run of an experiment page by page
(no cap, however long the experiment has lived), and the metric histories of many runs fetched concurrently.

MLflow (checked against 3.17.2) has no public bulk form of `MlflowClient.get_metric_history`. Its REST
`metrics/get-history-bulk-interval` endpoint is not in the Python client, takes at most 100 runs a request, and
samples steps (at most 2,500 per run, one point per step), so it could return other points than the history
holds; the UI's `ajax-api/.../get-history-bulk` is no public API at all. So the histories are the client's own
per-run calls, issued by a thread pool against a tracking server: the same points in the same order, and the
wall time of the round trips divided by about the pool size."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

# Runs per search_runs request: MLflow's stores accept up to 50,000; a page this size keeps each response small.
PAGE_SIZE = 1000
# Concurrent get_metric_history requests against a tracking server. A SQLite file is read in this process, where
# threads only contend for the interpreter and the file: its histories are read one after another.
WORKERS = 8


def all_runs(mlflow_client, experiment_ids: list[str], filter_string: str = "", order_by: list[str] | None = None,
             page_size: int = PAGE_SIZE) -> list:
    """Every run that matches, following search_runs' page tokens to the end: no silent cap."""
    found, token = [], None
    while True:
        page = mlflow_client.search_runs(experiment_ids, filter_string, max_results=page_size, order_by=order_by,
                                         page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def runs_frame(runs: list):
    """Runs as the DataFrame mlflow.search_runs returns: run_id, experiment_id, status, artifact_uri, start_time,
    end_time (UTC timestamps), then metrics.*, params.*, tags.* (NaN or None where a run lacks one)."""
    import numpy as np
    import pandas as pd

    info = {
        "run_id": [r.info.run_id for r in runs],
        "experiment_id": [r.info.experiment_id for r in runs],
        "status": [r.info.status for r in runs],
        "artifact_uri": [r.info.artifact_uri for r in runs],
        "start_time": [pd.to_datetime(r.info.start_time, unit="ms", utc=True) for r in runs],
        "end_time": [pd.to_datetime(r.info.end_time, unit="ms", utc=True) for r in runs],
    }
    columns = {}
    for prefix, part, missing in (("metrics", "metrics", np.nan), ("params", "params", None), ("tags", "tags", None)):
        keys = dict.fromkeys(k for r in runs for k in getattr(r.data, part))
        for key in keys:
            columns[f"{prefix}.{key}"] = [getattr(r.data, part).get(key, missing) for r in runs]
    return pd.DataFrame({**info, **columns})


def metric_histories(mlflow_client, wanted: list[tuple[str, str]], workers: int = 1) -> list[list]:
    """The history (MlflowClient.get_metric_history: every logged point, in the store's order) of each
    (run_id, metric) in `wanted`, in the same order; `workers` requests at a time."""
    wanted = list(wanted)
    if workers <= 1 or len(wanted) <= 1:
        return [mlflow_client.get_metric_history(run_id, metric) for run_id, metric in wanted]
    with ThreadPoolExecutor(max_workers=min(workers, len(wanted)), thread_name_prefix="ablation-history") as pool:
        return list(pool.map(lambda pair: mlflow_client.get_metric_history(*pair), wanted))


def workers_for(uri: str) -> int:
    """How many history requests to issue at once for a store at uri: WORKERS for a server, 1 for a file."""
    return WORKERS if uri.startswith(("http://", "https://")) else 1
