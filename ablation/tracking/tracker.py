"""Logging into one open MLflow run (Tracker), and the run's lifecycle (run()): a run that raises is closed
FAILED, an interrupted one KILLED, never left RUNNING. When a tracking server stops answering in the middle of a
run, the tracker goes on into a local journal and training continues."""
from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from ablation.core.errors import StoreUnavailable
from ablation.tracking import heartbeat
from ablation.tracking.connect import client
from ablation.tracking.context import context_tags
from ablation.tracking.inputs import entities
from ablation.tracking.journal import Journal
from ablation.tracking.process import process_tags
from ablation.tracking.store import experiment_id, server_down, store

MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit


PARENT_RUN_ENV = "ABLATION_PARENT_RUN_ID"


class Tracker:
    """Logging into one open MLflow run. When a tracking server stops answering in the middle of a run, the
    tracker goes on writing into a local journal (runs/unsent/<run_id>/: journal.jsonl and the artifact files),
    training continues, and the journal is sent when the server answers again (replay_unsent)."""

    def __init__(self, mlflow_client, run_id: str, uri: str | None = None):
        self.client = mlflow_client
        self.run_id = run_id
        self.uri = uri
        self.journal: Journal | None = None  # opened once the store has stopped answering
        self._pending = []  # (asynchronous write, its metrics), waited for by flush()
        self.heartbeat: heartbeat.Heartbeat | None = None  # refreshes the run's tag `heartbeat` while it is open

    # -- every write goes through _send: to the store, or to the journal once the store is gone -----------------
    def _send(self, entry: dict, call) -> None:
        if self.journal is None:
            try:
                return call()
            except Exception as exc:
                if not server_down(self.uri):
                    raise
                self.journal = Journal(self.uri, self.run_id, exc)
        self.journal.write(entry)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_CALL):
            chunk = items[i:i + MAX_PARAMS_PER_CALL]
            self._send({"kind": "params", "params": {p.key: p.value for p in chunk}},
                       lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict, step: int = 0, wait: bool = True) -> None:
        """All metrics of one step in a single request; non-finite values are skipped, not stored as NaN.
        wait=False queues the request (MLflow's asynchronous logging) so training does not wait for the store;
        flush() waits for every queued request (and journals what the store did not take)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        if not batch:
            return
        entry = {"kind": "metrics", "metrics": [[m.key, m.value, m.timestamp, m.step] for m in batch]}
        if wait or self.journal is not None:
            self._send(entry, lambda: self.client.log_batch(self.run_id, metrics=batch))
            return
        operation = self.client.log_batch(self.run_id, metrics=batch, synchronous=False)
        if operation is not None:
            self._pending.append((operation, entry))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for operation, entry in pending:
            self._send(entry, operation.wait)

    def set_tag(self, key: str, value: str) -> None:
        self._send({"kind": "tag", "key": key, "value": value}, lambda: self.client.set_tag(self.run_id, key, value))

    def log_inputs(self, datasets: list[dict]) -> None:
        """The run's datasets (inputs.records()): MLflow's inputs, the runs table's Dataset column."""
        self._send({"kind": "inputs", "datasets": datasets}, lambda: self._log_inputs(datasets))

    def _log_inputs(self, datasets: list[dict], tries: int = 3) -> None:
        """Parallel jobs of one seed log the same dataset (same name and digest) at the same moment; the store
        inserts it once per experiment, so all but one of them can fail on its unique key. The dataset exists
        by then, and logging again links it to the run."""
        for attempt in range(tries):
            try:
                return self.client.log_inputs(self.run_id, datasets=entities(datasets))
            except Exception as exc:
                text = str(exc)
                if attempt == tries - 1 or not any(k in text for k in ("UniqueViolation", "UNIQUE constraint",
                                                                       "Duplicate entry", "dataset_pk")):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def terminate(self, status: str) -> None:
        self._send({"kind": "terminate", "status": status}, lambda: self.client.set_terminated(self.run_id, status))

    def log_file(self, path: Path, folder: str | None = None) -> None:
        if self.journal is None:
            try:
                return self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
            except Exception as exc:
                if not server_down(self.uri):
                    raise
                self.journal = Journal(self.uri, self.run_id, exc)
        self.journal.keep_file(path, folder)

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            path.write_text(text)
            self.log_file(path, str(Path(name).parent) if Path(name).parent != Path(".") else None)

    def log_figure(self, figure, name: str) -> None:
        import matplotlib.pyplot as plt

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            figure.savefig(path, bbox_inches="tight")
            plt.close(figure)
            self.log_file(path, str(Path(name).parent) if Path(name).parent != Path(".") else None)

    def log_epoch(self, row: dict) -> None:
        """One epoch's row (measure.CleanGap), at step = its epoch; queued, not waited for: the next epoch starts
        while the store writes (flushed when the run ends)."""
        self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"], wait=False)
        if self.heartbeat is not None:
            self.heartbeat.beat()


@contextmanager
def run(cfg: DictConfig, run_name: str, tags: dict):
    """Open the MLflow run of one combination; its final status is what actually happened."""
    mlflow_client = client(cfg.tracking)
    exp_id = experiment_id(mlflow_client, cfg.tracking, cfg.experiment_name)
    tags = {k: str(v) for k, v in tags.items()}
    if os.environ.get(PARENT_RUN_ENV):
        # A job of a sweep: nested under the sweep's parent run (opened by ablation.sweep.jobs's Hydra callback).
        tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
    # Where the run's process lives and its first heartbeat, so a run left RUNNING by a process that died can be
    # told from a live one, on this machine or another (ablation.tracking.process).
    period = heartbeat.period_of(cfg.tracking)
    tags.update(process_tags(), **heartbeat.tags(period))
    # Source, user, git commit and library versions, as MLflow's fluent runs record them.
    tags = context_tags(tags)
    mlflow_run = mlflow_client.create_run(exp_id, run_name=run_name, tags=tags)
    tracker = Tracker(mlflow_client, mlflow_run.info.run_id, store(cfg.tracking)[0])
    tracker.heartbeat = heartbeat.Heartbeat(mlflow_client, tracker.run_id, period).start()
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        tracker.set_tag("error", "interrupted")
        raise
    except SystemExit as exc:  # the process is leaving in the middle of the run: a preempted job being requeued
        status = "KILLED"
        tracker.set_tag("error", f"the process exited in the middle of the run (exit status {exc.code})")
        raise
    except BaseException as exc:
        tracker.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        raise
    finally:
        try:
            tracker.flush()
        except Exception as exc:  # a lost metric must not pass for a finished run
            status = "FAILED"
            tracker.set_tag("error", f"metrics not recorded: {type(exc).__name__}: {exc}"[:5000])
            raise
        finally:
            tracker.heartbeat.stop()
            tracker.terminate(status)
    if tracker.journal is not None:
        raise StoreUnavailable(f"tracking.uri: the server at {tracker.uri} stopped answering during run "
                               f"{tracker.run_id}; the run {status.lower()} and everything it logged is kept in "
                               f"{tracker.journal.folder} (sent by the next run or by `python -m ablation.tracking replay` "
                               "once the server answers)")


def scratch_dir():
    """A temporary folder for files on their way to the artifact store."""
    return tempfile.TemporaryDirectory(prefix="ablation-")

