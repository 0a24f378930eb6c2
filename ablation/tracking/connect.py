"""An MlflowClient for a `tracking` config node: the SQLite store prepared once per process, a server checked
once (and sent the journals it missed while it was away)."""
from __future__ import annotations

from ablation.tracking.replay import replay_unsent
from ablation.tracking.store import prepare_sqlite, prepared, reach, sqlite_path, store

_reachable: set[str] = set()


def client(tracking):
    from mlflow.tracking import MlflowClient

    uri, _ = store(tracking)
    path = sqlite_path(uri)
    if path is not None:
        if path not in prepared:
            prepare_sqlite(uri, path)
    elif uri.startswith(("http://", "https://")) and uri not in _reachable:
        reach(uri)
        _reachable.add(uri)
        replay_unsent(uri)  # runs that lost this server in the middle: sent now that it answers
    return MlflowClient(tracking_uri=uri)
