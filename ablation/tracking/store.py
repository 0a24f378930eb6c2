"""Where the MLflow store is and how to reach it: the tracking URI and artifact root of a `tracking` config node,
the SQLite store's one-time preparation, a server's health check, and experiments created with the tags the UI
needs."""
from __future__ import annotations

import time
from pathlib import Path

from ablation import paths
from ablation.errors import ConfigError

# MLflow 3's UI opens other experiments in its GenAI view (traces), where runs are not listed.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


# Parallel jobs share one SQLite file: a writer that finds it locked waits up to this long instead of failing.
SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") else None


def store(tracking) -> tuple[str, str | None]:
    """(tracking URI, artifact root) for a `tracking` config node; the default store is paths.store_file().
    SQLite URIs get a busy timeout unless they set their own."""
    uri = tracking.get("uri") or f"sqlite:///{paths.store_file()}"
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


prepared: set[Path] = set()


SCHEMA_ATTEMPTS = 10


def prepare_sqlite(uri: str, path: Path) -> None:
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
    prepared.add(path)


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


def server_down(uri: str | None) -> bool:
    """True when uri is a tracking server that does not answer its health check (a local store never is)."""
    import urllib.request

    if not uri or not uri.startswith(("http://", "https://")):
        return False
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()
    except OSError:
        return True
    return False



def reach(uri: str) -> None:
    """A server that does not answer is a one-line error, at once (MLflow's own client would retry for minutes)."""
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10).close()
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"tracking.uri: cannot reach the MLflow server at {uri} ({reason}); start it or point "
                          "tracking.uri elsewhere") from None
