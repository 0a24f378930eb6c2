"""Sending journals (ablation.tracking.journal) to their server once it answers again: automatically when a
run first reaches that server, or by hand with `python -m ablation.tracking replay [tracking.uri=URI]`."""
from __future__ import annotations

import json
import logging
import shutil
import sys

from ablation.tracking.inputs import entities
from ablation.tracking.journal import unsent_root
from ablation.tracking.store import server_down

log = logging.getLogger(__name__)


def replay_unsent(uri: str) -> list[str]:
    """Send the journals of runs whose server stopped answering (runs/unsent/<run_id>/) to that server, in the
    order they were written; each journal is removed once it is all sent. Returns the run ids sent."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    sent = []
    for folder in sorted(unsent_root().glob("*/store.json")):
        folder = folder.parent
        if json.loads((folder / "store.json").read_text())["uri"] != uri or server_down(uri):
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
            elif entry["kind"] == "inputs":
                mlflow_client.log_inputs(run_id, datasets=entities(entry["datasets"]))
            elif entry["kind"] == "terminate":
                mlflow_client.set_terminated(run_id, entry["status"])
        mlflow_client.set_tag(run_id, "replayed_from_journal", "true")
        shutil.rmtree(folder)
        log.info("sent the journal of run %s to %s (%s entries)", run_id, uri, len(lines))
        sent.append(run_id)
    return sent


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
        if server_down(uri):
            print(f"the server at {uri} does not answer; its journals stay in {unsent_root()}", file=sys.stderr)
            left += 1
            continue
        replay_unsent(uri)
    return 1 if left else 0

