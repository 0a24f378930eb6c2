"""The only module that talks to MLflow: where the store is, the run's lifecycle (a run that raises is closed
FAILED, an interrupted one KILLED, never left RUNNING), flat params, the per-epoch callback, artifacts."""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ablation import errors

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
# MLflow 3's UI opens other experiments in its GenAI view (traces), where runs are not listed.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
PARENT_RUN_ENV = "ABLATION_PARENT_RUN_ID"


# Parallel jobs share one SQLite file: a writer that finds it locked waits up to this long instead of failing.
SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") else None


def store(tracking) -> tuple[str, str | None]:
    """(tracking URI, artifact root) for a `tracking` config node; local paths resolve from the project root,
    so Hydra's working directory does not matter. SQLite URIs get a busy timeout unless they set their own."""
    uri = tracking.get("uri") or f"sqlite:///{RUNS / 'mlflow.db'}"
    artifacts = tracking.get("artifact_root")
    path = sqlite_path(uri)
    if path is not None:
        if "?" not in uri:
            uri = f"{uri}?timeout={SQLITE_BUSY_TIMEOUT_S}"
        if artifacts is None:
            artifacts = str(path.parent / "artifacts")
    if artifacts is not None and "://" not in str(artifacts):
        artifacts = Path(artifacts).resolve().as_uri()
    return uri, artifacts


_prepared: set[Path] = set()


SCHEMA_ATTEMPTS = 10


def _prepare_sqlite(uri: str, path: Path) -> None:
    """Create the store's schema once and switch it to write-ahead logging, so readers never block writers and
    parallel jobs do not all run MLflow's first-time schema migration at once (a known failure). The sweep
    callback does this in the main process before any job starts."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    # Creates or migrates the schema. Another process opening a new store at the same moment (a second sweep, the
    # UI, a script reading the runs) runs the same first-time migration and one of the two fails half-way ("table
    # _alembic_tmp_... already exists", "No such index"); once the other has finished, the schema is complete.
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            break
        except Exception:
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as db:
        db.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
    _prepared.add(path)


_reachable: set[str] = set()


def client(tracking):
    """An MlflowClient for the store; a server that does not answer is a one-line error, at once (MLflow's own
    client would retry for minutes first)."""
    from mlflow.tracking import MlflowClient

    uri, _ = store(tracking)
    path = sqlite_path(uri)
    if path is not None:
        if path not in _prepared:
            _prepare_sqlite(uri, path)
    elif uri.startswith(("http://", "https://")) and uri not in _reachable:
        import urllib.request

        from ablation.errors import ConfigError

        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"tracking.uri: cannot reach the MLflow server at {uri} ({reason}); start it or point "
                              "tracking.uri elsewhere") from None
        _reachable.add(uri)
        replay_unsent(uri)  # runs that lost this server in the middle: sent now that it answers
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, tracking, name: str) -> str:
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    _, artifacts = store(tracking)
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    except Exception:
        # Another job of a parallel sweep may have created it in the meantime.
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b.c` params (lists kept as their JSON text)."""
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, (list, tuple)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


# Settings that change how a combination is run, recorded or reported, not what is trained.
NOT_IDENTITY = ("tracking", "force", "design", "report")


def config_hash(cfg: DictConfig, policy_fingerprint: str) -> str:
    """The combination's key: its resolved config without where it is tracked or how it is run, with the
    augmentation reduced to the policy's name and fingerprint (so `none` is one combination however it was
    reached). Re-running a sweep skips keys that already finished."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IDENTITY:
        data.pop(key, None)
    for key in ("verbose", "workers", "use_multiprocessing", "max_queue_size", "resume", "devices", "jit_compile"):
        data.get("trainer", {}).pop(key, None)
    data.get("dataset", {}).pop("cache", None)
    # Settings at their defaults are left out, so combinations recorded before the setting existed keep their key.
    for key, default in (("normalize", "rescale"), ("on_bad_image", "error")):
        if data.get("dataset", {}).get(key) == default:
            data["dataset"].pop(key)
    # The task's settings count only where they apply, so classify runs keep the keys they had before tasks existed.
    if data.get("task", "classify") != "inpaint":
        data.pop("inpaint", None)
    if data.get("task") == "classify":
        data.pop("task")
    augmentation = data["augmentation"]
    data["augmentation"] = {"fingerprint": policy_fingerprint, "where": augmentation.get("where", "host")}
    if augmentation.get("mode", "online") == "offline":
        # Trained on a written expansion: its size and format are part of what is trained. Online keys stay as
        # they were, so runs recorded before the mode existed are still recognised.
        data["augmentation"].update({k: augmentation.get(k) for k in ("mode", "copies", "save_format")})
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_run(cfg: DictConfig, key: str):
    """The latest FINISHED run of this combination, or None. Runs left RUNNING by a crash are marked KILLED,
    so that only what actually finished counts."""
    mlflow_client = client(cfg.tracking)
    exp = mlflow_client.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return None
    found = None
    for previous in mlflow_client.search_runs([exp.experiment_id], f"tags.config_hash = '{key}'",
                                              order_by=["attributes.start_time DESC"]):
        if previous.info.status == "RUNNING":
            if not _may_be_alive(previous):
                _mark_dead(mlflow_client, previous, "left RUNNING (the process died); marked KILLED")
        elif previous.info.status == "FINISHED" and found is None:
            found = previous
    return found


StoreUnavailable = errors.StoreUnavailable  # defined with the other user errors


def unsent_root() -> Path:
    return Path(os.environ.get("ABLATION_UNSENT_DIR", RUNS / "unsent"))


class Tracker:
    """Logging into one open MLflow run. When a tracking server stops answering in the middle of a run, the
    tracker goes on writing into a local journal (runs/unsent/<run_id>/: journal.jsonl and the artifact files),
    training continues, and the journal is sent when the server answers again (replay_unsent)."""

    def __init__(self, mlflow_client, run_id: str, uri: str | None = None):
        self.client = mlflow_client
        self.run_id = run_id
        self.uri = uri
        self.journal: Path | None = None  # set once the store has stopped answering
        self._pending = []  # (asynchronous write, its metrics), waited for by flush()

    # -- every write goes through _send: to the store, or to the journal once the store is gone -----------------
    def _send(self, entry: dict, call) -> None:
        if self.journal is None:
            try:
                return call()
            except Exception as exc:
                if not _store_down(self.uri):
                    raise
                self._go_offline(exc)
        self._write_journal(entry)

    def _go_offline(self, exc: BaseException) -> None:
        self.journal = unsent_root() / self.run_id
        (self.journal / "files").mkdir(parents=True, exist_ok=True)
        (self.journal / "store.json").write_text(json.dumps({"uri": self.uri, "run_id": self.run_id,
                                                             "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        print(f"warning: the tracking server at {self.uri} stopped answering; run {self.run_id} goes on and keeps "
              f"what it logs in {self.journal}", file=sys.stderr, flush=True)

    def _write_journal(self, entry: dict) -> None:
        with open(self.journal / "journal.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _keep_file(self, path: Path, folder: str | None) -> dict:
        """An artifact that cannot be sent now: copied into the journal."""
        import shutil

        target = self.journal / "files" / f"{len(list((self.journal / 'files').iterdir()))}" / Path(path).name
        target.parent.mkdir(parents=True)
        shutil.copyfile(path, target)
        return {"kind": "file", "path": str(target.relative_to(self.journal)), "folder": folder}

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

    def terminate(self, status: str) -> None:
        self._send({"kind": "terminate", "status": status}, lambda: self.client.set_terminated(self.run_id, status))

    def log_file(self, path: Path, folder: str | None = None) -> None:
        if self.journal is None:
            try:
                return self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
            except Exception as exc:
                if not _store_down(self.uri):
                    raise
                self._go_offline(exc)
        self._write_journal(self._keep_file(path, folder))

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


@contextmanager
def run(cfg: DictConfig, run_name: str, tags: dict):
    """Open the MLflow run of one combination; its final status is what actually happened."""
    mlflow_client = client(cfg.tracking)
    exp_id = experiment_id(mlflow_client, cfg.tracking, cfg.experiment_name)
    tags = {k: str(v) for k, v in tags.items()}
    if os.environ.get(PARENT_RUN_ENV):
        # A job of a sweep: nested under the sweep's parent run (opened by ablation.sweep's Hydra callback).
        tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
    # Where the run's process lives, so a run left RUNNING by a process that died can be told from a live one.
    tags.update(_process_tags())
    mlflow_run = mlflow_client.create_run(exp_id, run_name=run_name, tags=tags)
    tracker = Tracker(mlflow_client, mlflow_run.info.run_id, store(cfg.tracking)[0])
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        tracker.set_tag("error", "interrupted")
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
            tracker.terminate(status)
    if tracker.journal is not None:
        raise StoreUnavailable(f"tracking.uri: the server at {tracker.uri} stopped answering during run "
                               f"{tracker.run_id}; the run {status.lower()} and everything it logged is kept in "
                               f"{tracker.journal} (sent by the next run or by `python -m ablation.tracking replay` "
                               "once the server answers)")


def _store_down(uri: str | None) -> bool:
    """True when uri is a tracking server that does not answer its health check (a local store never is)."""
    import urllib.request

    if not uri or not uri.startswith(("http://", "https://")):
        return False
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()
    except OSError:
        return True
    return False


def replay_unsent(uri: str) -> list[str]:
    """Send the journals of runs whose server stopped answering (runs/unsent/<run_id>/) to that server, in the
    order they were written; each journal is removed once it is all sent. Returns the run ids sent."""
    import shutil

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    sent = []
    for folder in sorted(unsent_root().glob("*/store.json")):
        folder = folder.parent
        if json.loads((folder / "store.json").read_text())["uri"] != uri or _store_down(uri):
            continue
        mlflow_client, run_id = MlflowClient(tracking_uri=uri), folder.name
        lines = (folder / "journal.jsonl").read_text().splitlines() if (folder / "journal.jsonl").exists() else []
        for line in lines:
            entry = json.loads(line)
            if entry["kind"] == "metrics":
                mlflow_client.log_batch(run_id, metrics=[Metric(*m) for m in entry["metrics"]])
            elif entry["kind"] == "params":
                mlflow_client.log_batch(run_id, params=[Param(k, v) for k, v in entry["params"].items()])
            elif entry["kind"] == "tag":
                mlflow_client.set_tag(run_id, entry["key"], entry["value"])
            elif entry["kind"] == "file":
                mlflow_client.log_artifact(run_id, str(folder / entry["path"]), artifact_path=entry["folder"])
            elif entry["kind"] == "terminate":
                mlflow_client.set_terminated(run_id, entry["status"])
        mlflow_client.set_tag(run_id, "replayed_from_journal", "true")
        shutil.rmtree(folder)
        print(f"sent the journal of run {run_id} to {uri} ({len(lines)} entries)", flush=True)
        sent.append(run_id)
    return sent


def scratch_dir():
    """A temporary folder for files on their way to the artifact store."""
    return tempfile.TemporaryDirectory(prefix="ablation-")


def load_runs(tracking, experiment_name: str):
    """Every run of an experiment as a pandas DataFrame (mlflow.search_runs: params.*, metrics.*, tags.*)."""
    import mlflow

    uri, _ = store(tracking)
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment_name], max_results=50000)


def open_parent(cfg: DictConfig, params: dict) -> str:
    """The parent run of a sweep: its jobs' runs are nested under it (tag mlflow.parentRunId)."""
    mlflow_client = client(cfg.tracking)
    exp_id = experiment_id(mlflow_client, cfg.tracking, cfg.experiment_name)
    name = f"sweep/{cfg.experiment_name}/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    _close_dead_parents(mlflow_client, exp_id)
    parent = mlflow_client.create_run(exp_id, run_name=name, tags={"sweep": "parent", "experiment": cfg.experiment_name,
                                                                    **_process_tags()})
    Tracker(mlflow_client, parent.info.run_id).log_params(params)
    return parent.info.run_id


def _close_dead_parents(mlflow_client, exp_id: str) -> None:
    """A sweep whose process was killed (kill -9, a lost machine) left its parent run RUNNING; a sweep on the
    same machine marks it KILLED when the process it names is gone."""
    for parent in mlflow_client.search_runs([exp_id], "tags.sweep = 'parent' and attributes.status = 'RUNNING'"):
        if _process_gone(parent):
            _mark_dead(mlflow_client, parent, "left RUNNING (the sweep's process died); marked KILLED")


def close_dead_children(cfg: DictConfig, parent_run_id: str, grace_s: float = 15.0) -> list[str]:
    """After a sweep is interrupted: its runs still RUNNING whose process on this machine has ended (a launcher
    kills its workers on Ctrl-C, sometimes before a job has closed its run) are marked KILLED. A process still
    alive gets up to `grace_s` to close its run itself; runs on other machines (a cluster's jobs) are left as
    they are. Returns the names of the runs marked."""
    mlflow_client = client(cfg.tracking)
    exp_id = mlflow_client.get_run(parent_run_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    deadline = time.time() + grace_s
    marked = []
    while True:
        waiting = 0
        for r in mlflow_client.search_runs([exp_id], query, max_results=50000):
            # This process's own jobs (the basic launcher runs them here) have all returned or raised by now.
            if _process_gone(r) or (_on_this_host(r) and r.data.tags["pid"] == str(os.getpid())):
                _mark_dead(mlflow_client, r, "the sweep was interrupted and the job's process ended before closing "
                                             "the run; marked KILLED")
                marked.append(r.info.run_name)
            elif _may_be_alive(r):  # still closing its run, perhaps: look again
                waiting += 1
        if not waiting or time.time() > deadline:
            return marked
        time.sleep(0.5)


def _process_tags() -> dict[str, str]:
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _on_this_host(mlflow_run) -> bool:
    tags = mlflow_run.data.tags
    return tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit()


def _process_gone(mlflow_run) -> bool:
    """True when the run names a process on this machine that no longer exists."""
    return _on_this_host(mlflow_run) and not _alive(int(mlflow_run.data.tags["pid"]))


def _may_be_alive(mlflow_run) -> bool:
    """A RUNNING run whose process is alive on this machine, other than this one (which is not training it)."""
    return (_on_this_host(mlflow_run) and mlflow_run.data.tags["pid"] != str(os.getpid())
            and _alive(int(mlflow_run.data.tags["pid"])))


def _mark_dead(mlflow_client, mlflow_run, reason: str) -> None:
    mlflow_client.set_tag(mlflow_run.info.run_id, "error", reason)
    mlflow_client.set_terminated(mlflow_run.info.run_id, "KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def count_children(cfg: DictConfig, parent_run_id: str) -> int:
    """How many runs this sweep trained (whatever their status)."""
    mlflow_client = client(cfg.tracking)
    parent = mlflow_client.get_run(parent_run_id)
    return len(mlflow_client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                         max_results=50000))


def log_to_run(cfg: DictConfig, run_id: str, metrics: dict | None = None, params: dict | None = None,
               folder: Path | None = None) -> None:
    tracker = Tracker(client(cfg.tracking), run_id)
    if metrics:
        tracker.log_metrics(metrics)
    if params:
        tracker.log_params(params)
    if folder is not None:
        tracker.client.log_artifacts(run_id, str(folder), artifact_path=Path(folder).name)


def close_parent(cfg: DictConfig, run_id: str, status: str, reason: str | None = None) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """python -m ablation.tracking replay [tracking.uri=URI]: send the journals kept while a server was away."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "replay":
        print("usage: python -m ablation.tracking replay [tracking.uri=http://127.0.0.1:5001]", file=sys.stderr)
        return 2
    uris = [a.split("=", 1)[1] for a in args[1:] if a.startswith("tracking.uri=")]
    pending = {json.loads(p.read_text())["uri"] for p in unsent_root().glob("*/store.json")}
    targets = uris or sorted(pending)
    if not targets:
        print(f"nothing to send: {unsent_root()} holds no journal")
        return 0
    left = 0
    for uri in targets:
        if _store_down(uri):
            print(f"the server at {uri} does not answer; its journals stay in {unsent_root()}", file=sys.stderr)
            left += 1
            continue
        replay_unsent(uri)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
