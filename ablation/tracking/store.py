"""Where the MLflow store is and how to reach it: the tracking URI and artifact root of a `tracking` config node
(tracking.uri, else MLFLOW_TRACKING_URI, else the embedded SQLite store), the SQLite store's one-time preparation,
a server's reachability probe (through MLflow's own client, with the credentials runs send), and experiments
created with the tags the UI needs."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ablation.core import paths
from ablation.core.errors import ConfigError
from ablation.tracking import compat

# MLflow 3's UI opens other experiments in its GenAI view (traces), where runs are not listed.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


# Parallel jobs share one SQLite file: a writer that finds it locked waits up to this long instead of failing.
SQLITE_BUSY_TIMEOUT_S = 60


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") else None


URI_ENV = "MLFLOW_TRACKING_URI"


def store(tracking) -> tuple[str, str | None]:
    """(tracking URI, artifact root) for a `tracking` config node. The URI is tracking.uri (the command line or
    the config), else MLflow's own MLFLOW_TRACKING_URI, else the embedded store paths.store_file(). SQLite URIs
    get a busy timeout unless they set their own."""
    uri = tracking.get("uri") or os.environ.get(URI_ENV) or f"sqlite:///{paths.store_file()}"
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


# The probe's request: MLflow's REST client (the credentials of MLFLOW_TRACKING_USERNAME/PASSWORD or
# MLFLOW_TRACKING_TOKEN, or ~/.mlflow/credentials, and MLflow's request headers: exactly what runs send) with a
# short timeout and one quick retry, where MLflow's defaults (7 retries, 120 s timeout) wait for minutes. The
# limits are passed to this one request, not set in the environment, so concurrent logging keeps its own.
PROBE_TIMEOUT_S = 5
PROBE_RETRIES = 1
# A server that accepted the connection but did not answer in time is busy, not absent (a loaded machine, a
# server starting its workers): it gets one patient probe before it is called unreachable.
SLOW_PROBE_TIMEOUT_S = 60
BUSY = "connected, but no answer in time"  # a read timeout; a connect timeout is a host that does not answer
AUTH_STATUS = (401, 403)


def probe(uri: str, timeout: float | None = None) -> tuple[int | None, str]:
    """(HTTP status, reason) of a one-experiment search at a tracking server; (None, reason) when nothing
    answers. A quick probe that timed out waiting for the answer is followed by one patient one."""
    status, reason = _probe(uri, timeout or PROBE_TIMEOUT_S)
    if status is None and reason == BUSY and timeout is None:
        status, reason = _probe(uri, SLOW_PROBE_TIMEOUT_S)
    return status, reason


def _probe(uri: str, timeout: float) -> tuple[int | None, str]:
    try:
        response = compat.http_request(compat.host_creds(uri), "/api/2.0/mlflow/experiments/search", "POST",
                                       max_retries=PROBE_RETRIES, backoff_factor=0, backoff_jitter=0,
                                       timeout=timeout, raise_on_status=False, json={"max_results": 1})
    except Exception as exc:
        # requests' text nests the cause ("... Max retries exceeded ... [Errno 111] Connection refused"))"): its
        # innermost reason is what a user needs.
        text = str(exc)
        if "Read timed out" in text:
            return None, BUSY
        inner = re.search(r"(\[Errno -?\d+\][^'\")]*|timed out|Name or service not known)", text)
        return None, inner.group(1).strip() if inner else text.splitlines()[0][:300] or type(exc).__name__
    return response.status_code, f"HTTP {response.status_code} {response.reason or ''}".strip()


def is_server(uri: str | None) -> bool:
    return bool(uri) and uri.startswith(("http://", "https://"))


def server_down(uri: str | None) -> bool:
    """True when uri is a tracking server that does not answer (a local store never is). A server that answers,
    even to refuse the credentials, is up: the tracker's journal is for servers that went away."""
    if not is_server(uri):
        return False
    status, _ = probe(uri)
    return status is None or status >= 500


def reach(uri: str) -> None:
    """A server that does not answer, or refuses the credentials, is a one-line error at once, before anything
    trains (MLflow's own client would retry for minutes, run by run)."""
    status, reason = probe(uri)
    if status in AUTH_STATUS:
        creds = compat.host_creds(uri)  # what the probe sent: the variables, else ~/.mlflow/credentials
        sent = (f"user {creds.username!r}" if creds.username else "a token" if creds.token else "no credentials")
        raise ConfigError(f"tracking.uri: the MLflow server at {uri} refused the credentials ({reason}; sent {sent}); "
                          "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
                          "to an account of that server")
    if status is None or status >= 500:
        raise ConfigError(f"tracking.uri: cannot reach the MLflow server at {uri} ({reason}); start it or point "
                          "tracking.uri elsewhere")
    if status != 200:
        raise ConfigError(f"tracking.uri: {uri} answered {reason} to an MLflow experiment search; is it the address "
                          "of an MLflow tracking server?")
