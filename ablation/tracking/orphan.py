"""A sweep whose own process ended (killed, a closed login, a lost submit host) while its jobs went on: whether its
parent run is orphaned, whether every combination has ended, and which one process closes it (claim), so that the
last job, or `ablation-report`, can finish the sweep in its place (ablation.sweep.parent.finish_detached)."""
from __future__ import annotations

import time

from ablation.tracking.bulk import all_runs
from ablation.tracking.connect import client
from ablation.tracking.process import dead

CLAIM_TAG = "finished_by"  # who closed a sweep's parent run in place of the sweep's own process
ENDED = ("FINISHED", "FAILED", "KILLED")
SETTLE_S = 1.0  # how long a claim stands before it is read back


def orphaned(tracking, parent_run) -> bool:
    """The sweep's parent run is RUNNING and its process is known to be dead (its pid gone from this machine, or
    its heartbeat older than the grace): nobody else will build its report and close it."""
    return parent_run.info.status == "RUNNING" and dead(parent_run, tracking)


def progress(tracking, parent_run, keys: list[str]) -> dict[str, int]:
    """How far a sweep got: `left`, its combinations (keys) not yet ended (none of its runs finished, failed or was
    killed; a job not started has no run), `finished`, those with a finished run, `trained` (its own runs),
    `failed` (its own failed runs)."""
    mlflow_client = client(tracking)
    parent_id = parent_run.info.run_id
    ended, finished, trained, failed = set(), set(), 0, 0
    for r in all_runs(mlflow_client, [parent_run.info.experiment_id]):
        key = r.data.tags.get("config_hash")
        if key is None:  # a sweep's parent run
            continue
        own = r.data.tags.get("mlflow.parentRunId") == parent_id
        trained += own
        failed += own and r.info.status == "FAILED"
        # A combination ends with a finished run from any sweep (a skipped job), or with this sweep's own run's end.
        if r.info.status == "FINISHED" or (own and r.info.status in ENDED):
            ended.add(key)
        if r.info.status == "FINISHED":
            finished.add(key)
    return {"left": len(set(keys) - ended), "finished": len(set(keys) & finished), "trained": trained,
            "failed": failed}


def claim(tracking, parent_run_id: str, who: str) -> bool:
    """Whether this process (who) closes the orphaned parent: it writes its name into the parent's CLAIM_TAG unless
    another has, waits SETTLE_S and reads it back; of two that end at once, the one written last wins."""
    mlflow_client = client(tracking)
    holder = mlflow_client.get_run(parent_run_id).data.tags.get(CLAIM_TAG)
    if holder not in (None, who):
        return False
    mlflow_client.set_tag(parent_run_id, CLAIM_TAG, who)
    time.sleep(SETTLE_S)
    return mlflow_client.get_run(parent_run_id).data.tags.get(CLAIM_TAG) == who
