"""The runs of an experiment as a whole: the finished run of a combination (what a resumed sweep skips), a sweep's
parent run (its source, its definition) and its children, dead runs marked KILLED, and reading runs and artifacts
back."""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ablation.core import renamed
from ablation.tracking import heartbeat
from ablation.tracking.bulk import PAGE_SIZE, all_runs, metric_histories, runs_frame, workers_for
from ablation.tracking.connect import client
from ablation.tracking.context import context_tags
from ablation.tracking.process import (
    dead,
    mark_dead,
    may_be_alive,
    on_this_host,
    process_tags,
    this_process,
    whereabouts,
)
from ablation.tracking.store import experiment_id, store
from ablation.tracking.tracker import Tracker


@dataclass
class Previous:
    """What an experiment holds of one combination: its latest FINISHED run, and a RUNNING run that another
    process, here or on another machine, is still training (its heartbeat is fresh)."""
    finished: object | None = None
    running: object | None = None
    where: str = ""  # where the running one is: `on node-a (heartbeat 12 s ago)`


def previous_runs(cfg: DictConfig, key: str) -> Previous:
    """The latest FINISHED run of this combination and a live RUNNING one. Runs left RUNNING by a process that
    died (on this machine its pid is gone; anywhere, its heartbeat is older than the grace) are marked KILLED, so
    that only what actually finished counts and the combination can be trained again."""
    mlflow_client = client(cfg.tracking)
    exp = mlflow_client.get_experiment_by_name(cfg.experiment_name)
    found = Previous()
    if exp is None:
        return found
    for previous in all_runs(mlflow_client, [exp.experiment_id], f"tags.config_hash = '{key}'",
                             order_by=["attributes.start_time DESC"]):
        if previous.info.status == "RUNNING":
            if not may_be_alive(previous, cfg.tracking):
                mark_dead(mlflow_client, previous, "left RUNNING (the process died); marked KILLED")
            elif found.running is None:
                found.running, found.where = previous, whereabouts(previous)
        elif previous.info.status == "FINISHED" and found.finished is None:
            found.finished = previous
    return found


def finished_run(cfg: DictConfig, key: str):
    """The latest FINISHED run of this combination, or None (previous_runs: dead RUNNING runs are marked KILLED)."""
    return previous_runs(cfg, key).finished


def load_runs(tracking, experiment_name: str, page_size: int = PAGE_SIZE):
    """Every run of an experiment as a pandas DataFrame (mlflow.search_runs' layout: params.*, metrics.*, tags.*),
    latest first, read page by page to the last run (no cap)."""
    mlflow_client = client(tracking)  # a server checked (unreachable, refused credentials: one line), SQLite prepared
    exp = mlflow_client.get_experiment_by_name(experiment_name)
    found = all_runs(mlflow_client, [exp.experiment_id], page_size=page_size) if exp is not None else []
    return current_names(runs_frame(found))


def histories(tracking, wanted: list[tuple[str, str]], workers: int | None = None) -> list[list]:
    """The metric history of each (run_id, metric) in wanted, in that order (bulk.metric_histories): concurrent
    requests against a tracking server (bulk.WORKERS unless `workers` says), one after another from a file."""
    mlflow_client = client(tracking)
    uri, _ = store(tracking)
    return metric_histories(mlflow_client, wanted, workers_for(uri) if workers is None else workers)


def current_names(runs):
    """The runs table with the params of runs recorded before keys were renamed (ablation.core.renamed) read under
    the current names: task -> task.name, inpaint.* -> task.*, design/strength/force -> sweep.*, and
    augmentation.where with augmentation.mode -> augmentation.placement (offline, else where). A run recorded
    under the current names keeps its own values; the old columns are dropped."""
    old = [c for c in runs.columns if c.startswith("params.")
           and (c == "params.task" or renamed.new_key(c[7:]) is not None)]
    if not old:
        return runs
    current = {}
    for column in old:
        name = column[7:]
        new = "params.task.name" if name == "task" else f"params.{renamed.new_key(name)}"
        values = runs[column]
        if new == "params.augmentation.placement":  # where (host|device), or offline where mode says so
            recorded = runs[column].notna()
            where = runs.get("params.augmentation.where", recorded.map({True: "host", False: None}))
            mode = runs.get("params.augmentation.mode", recorded.map({True: "online", False: None}))
            values = where.where(mode != "offline", "offline")
        current[new] = runs[new].fillna(values) if new in runs else values
    return runs.drop(columns=old).assign(**current)


def open_parent(cfg: DictConfig, params: dict) -> str:
    """The parent run of a sweep: its jobs' runs are nested under it (tag mlflow.parentRunId)."""
    mlflow_client = client(cfg.tracking)
    exp_id = experiment_id(mlflow_client, cfg.tracking, cfg.experiment_name)
    name = f"sweep/{cfg.experiment_name}/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    _close_dead_parents(mlflow_client, exp_id, cfg.tracking)
    period = heartbeat.period_of(cfg.tracking)
    tags = context_tags({"sweep": "parent", "experiment": cfg.experiment_name, **process_tags(),
                         **heartbeat.tags(period)})
    parent = mlflow_client.create_run(exp_id, run_name=name, tags=tags)
    # The parent's heartbeat goes on until close_parent (or this process ends).
    _beating[parent.info.run_id] = heartbeat.Heartbeat(mlflow_client, parent.info.run_id, period).start()
    Tracker(mlflow_client, parent.info.run_id).log_params(params)
    return parent.info.run_id


_beating: dict[str, heartbeat.Heartbeat] = {}  # the heartbeats of the parent runs this process has open


SWEEP_DEFINITION = "sweep.json"


def sweep_hash(keys: list[str]) -> str:
    """The sweep's definition as one hash: its combinations' keys (config_hash: each job's resolved config, the
    defaults included, without where it is tracked), sorted and deduplicated. The same sweep gets the same hash
    whatever the order or spelling of its overrides, wherever it is tracked, at whatever commit."""
    return hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()[:16]


def describe_sweep(cfg: DictConfig, parent_run_id: str, keys: list[str], jobs: list[list[str]],
                   design: dict | None = None) -> str:
    """Record a sweep's definition on its parent run: tag sweep_hash, and the artifact sweep.json (the hash,
    the combinations' keys, the expanded jobs' overrides, and what `design` adds: a sequential sweep's looks).
    Returns the hash."""
    digest = sweep_hash(keys)
    tracker = Tracker(client(cfg.tracking), parent_run_id)
    tracker.set_tag("sweep_hash", digest)
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        path = Path(tmp) / SWEEP_DEFINITION
        path.write_text(json.dumps({"sweep_hash": digest, "keys": sorted(set(keys)), "jobs": jobs, **(design or {})},
                                   indent=1))
        tracker.log_file(path)
    return digest


def sweep_definition(tracking, parent_run_id: str) -> dict | None:
    """What describe_sweep recorded on a sweep's parent run; None for a parent without it."""
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        path = download(tracking, parent_run_id, SWEEP_DEFINITION, Path(tmp))
        return json.loads(path.read_text()) if path is not None else None


def sweep_keys(tracking, parent_run_id: str) -> list[str] | None:
    """The combinations' keys a sweep's parent run recorded (describe_sweep); None for a parent without them."""
    definition = sweep_definition(tracking, parent_run_id)
    return definition["keys"] if definition is not None else None


def _close_dead_parents(mlflow_client, exp_id: str, tracking=None) -> None:
    """A sweep whose process was killed (kill -9, a lost machine) left its parent run RUNNING; the next sweep marks
    it KILLED once it is known dead (process.dead: its process gone from this machine, or its heartbeat older
    than the grace)."""
    for parent in all_runs(mlflow_client, [exp_id], "tags.sweep = 'parent' and attributes.status = 'RUNNING'"):
        if dead(parent, tracking):
            mark_dead(mlflow_client, parent, "left RUNNING (the sweep's process died); marked KILLED")


def close_dead_children(cfg: DictConfig, parent_run_id: str, grace_s: float = 15.0) -> list[str]:
    """After a sweep is interrupted: its runs still RUNNING whose process has ended (a launcher kills its workers
    on Ctrl-C, sometimes before a job has closed its run) are marked KILLED: on this machine when the pid is gone,
    on any machine when the heartbeat is older than the heartbeat's grace. A process still alive on this machine
    gets up to `grace_s` to close its run itself; runs elsewhere with a fresh heartbeat (a cluster's jobs still
    running) are left as they are. Returns the names of the runs marked."""
    mlflow_client = client(cfg.tracking)
    exp_id = mlflow_client.get_run(parent_run_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    deadline = time.time() + grace_s
    marked = []
    while True:
        waiting = 0
        for r in all_runs(mlflow_client, [exp_id], query):
            # This process's own jobs (the basic launcher runs them here) have all returned or raised by now.
            if dead(r, cfg.tracking) or this_process(r):
                mark_dead(mlflow_client, r, "the sweep was interrupted and the job's process ended before closing "
                                             "the run; marked KILLED")
                marked.append(r.info.run_name)
            elif on_this_host(r) and may_be_alive(r, cfg.tracking):  # still closing its run, perhaps: look again
                waiting += 1
        if not waiting or time.time() > deadline:
            return marked
        time.sleep(0.5)


def count_children(cfg: DictConfig, parent_run_id: str) -> int:
    """How many runs this sweep trained (whatever their status)."""
    mlflow_client = client(cfg.tracking)
    parent = mlflow_client.get_run(parent_run_id)
    return len(all_runs(mlflow_client, [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"))


def log_to_run(cfg: DictConfig, run_id: str, metrics: dict | None = None, params: dict | None = None,
               folder: Path | None = None, step: int = 0) -> None:
    tracker = Tracker(client(cfg.tracking), run_id)
    if metrics:
        tracker.log_metrics(metrics, step=step)
    if params:
        tracker.log_params(params)
    if folder is not None:
        tracker.client.log_artifacts(run_id, str(folder), artifact_path=Path(folder).name)


def publish(cfg_tracking, parent_run_id: str | None, run_tags: dict[str, dict[str, str]], note: str | None = None,
            table=None, table_file: str | None = None) -> None:
    """The report's verdicts into MLflow: each decided run's tags (one request per run), and on the sweep's parent
    run the description (`mlflow.note.content`, Markdown in the UI) and the decision table (log_table)."""
    from mlflow.entities import RunTag

    mlflow_client = client(cfg_tracking)
    for run_id, tags in run_tags.items():
        mlflow_client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if parent_run_id:
        if note is not None:
            mlflow_client.set_tag(parent_run_id, "mlflow.note.content", note)
        if table is not None and table_file:
            mlflow_client.log_table(parent_run_id, data=table, artifact_file=table_file)


def close_parent(cfg: DictConfig, run_id: str, status: str, reason: str | None = None) -> None:
    beating = _beating.pop(run_id, None)
    if beating is not None:
        beating.stop()
    mlflow_client = client(cfg.tracking)
    if reason:
        mlflow_client.set_tag(run_id, "error", reason[:5000])
    mlflow_client.set_terminated(run_id, status)


def experiment_of(tracking, run_id: str) -> str:
    mlflow_client = client(tracking)
    return mlflow_client.get_experiment(mlflow_client.get_run(run_id).info.experiment_id).name


def download(tracking, run_id: str, artifact: str, folder: Path) -> Path | None:
    """One artifact of a run into folder; None when the run has no such artifact."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client(tracking).download_artifacts(run_id, artifact, str(folder)))
    except Exception:
        return None


def find_run(tracking, run_id: str):
    """The run with this id, or None when the store holds none (a malformed id included)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking).get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise

