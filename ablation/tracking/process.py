"""Which process a run belongs to and whether it is still alive, so that a run left RUNNING by a process that died
(kill -9, a lost machine) can be told from a live one, on this machine or another, and marked KILLED.

The rule for a RUNNING run:
- on this host (its `host` tag is this machine's name), a `pid` that no longer exists is dead at once, and this
  process's own pid is not training it any more;
- otherwise a run with a `heartbeat` tag is alive while the heartbeat is younger than the grace (grace_s), dead once
  it is older: a run on another host is judged by its heartbeat only;
- a run without a heartbeat (recorded before runs had one) is alive only when its pid is alive on this host.
"""
from __future__ import annotations

import os
import socket
import time

from ablation.tracking import heartbeat

HOST_ENV = "ABLATION_HOST"  # this machine's name in the runs' `host` tags, when the system's is not the one to use
# The node of a cluster a job runs on, as its launcher names it (hydra/launcher=ray: the Ray node id), recorded in
# the run's `node` tag beside `host`: several nodes may share one host name (a cluster on one machine).
NODE_ENV = "ABLATION_NODE"
# One job of a sweep, the same for every attempt at it, as a launcher that retries jobs names it (hydra/launcher=ray:
# Ray retries a task whose worker or node died), recorded in the run's `launch` tag: a RUNNING run of the same
# launch made by another process is an earlier attempt, and its process is gone.
LAUNCH_ENV = "ABLATION_LAUNCH"
SLACK_S = 15.0  # what a heartbeat may be late by beyond three missed beats: a busy store, clocks apart


def host_name() -> str:
    """$ABLATION_HOST, else the system's host name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def process_tags() -> dict[str, str]:
    extra = {tag: os.environ[name] for tag, name in (("node", NODE_ENV), ("launch", LAUNCH_ENV)) if os.environ.get(name)}
    return {"host": host_name(), "pid": str(os.getpid()), **extra}


def on_this_host(mlflow_run) -> bool:
    tags = mlflow_run.data.tags
    return tags.get("host") == host_name() and tags.get("pid", "").isdigit()


def process_gone(mlflow_run) -> bool:
    """True when the run names a process on this machine that no longer exists."""
    return on_this_host(mlflow_run) and not alive(int(mlflow_run.data.tags["pid"]))


def this_process(mlflow_run) -> bool:
    return on_this_host(mlflow_run) and mlflow_run.data.tags["pid"] == str(os.getpid())


def heartbeat_age(mlflow_run) -> float | None:
    """Seconds since the run's last heartbeat; None for a run without one."""
    try:
        return time.time() - float(mlflow_run.data.tags[heartbeat.TAG])
    except (KeyError, ValueError):
        return None


def grace_s(mlflow_run, tracking=None) -> float:
    """How old a run's heartbeat may be before the run is taken for dead: tracking.heartbeat_grace_s when set,
    else three of the run's own heartbeat periods (its tag heartbeat_s) plus SLACK_S."""
    chosen = tracking.get("heartbeat_grace_s") if tracking is not None else None
    if chosen is not None:
        return float(chosen)
    try:
        period = float(mlflow_run.data.tags[heartbeat.PERIOD_TAG])
    except (KeyError, ValueError):
        period = heartbeat.period_of(tracking)
    return 3 * period + SLACK_S


def earlier_attempt(mlflow_run) -> bool:
    """The run was made by an earlier attempt at this process's own job (its `launch` tag is this process's
    LAUNCH_ENV, its process another): a launcher retries a job only once that attempt's process has died."""
    launch = os.environ.get(LAUNCH_ENV)
    return bool(launch) and mlflow_run.data.tags.get("launch") == launch and not this_process(mlflow_run)


def dead(mlflow_run, tracking=None) -> bool:
    """Known to be dead: its process is gone from this machine, or its heartbeat is older than the grace, or it
    was an earlier attempt at this process's job. A run without a heartbeat on another machine is not known to be
    dead."""
    if process_gone(mlflow_run) or earlier_attempt(mlflow_run):
        return True
    age = heartbeat_age(mlflow_run)
    return age is not None and age > grace_s(mlflow_run, tracking)


def may_be_alive(mlflow_run, tracking=None) -> bool:
    """A RUNNING run that another process (not this one) may still be training: on this host its pid is alive, and
    its heartbeat, where it has one, is younger than the grace. A run without a heartbeat on another host is not."""
    if earlier_attempt(mlflow_run):
        return False
    if on_this_host(mlflow_run) and (this_process(mlflow_run) or process_gone(mlflow_run)):
        return False
    age = heartbeat_age(mlflow_run)
    if age is None:
        return on_this_host(mlflow_run)
    return age <= grace_s(mlflow_run, tracking)


def whereabouts(mlflow_run) -> str:
    """`on node-a (heartbeat 12 s ago)`: where a live run is, for the line that says why it is left alone."""
    age = heartbeat_age(mlflow_run)
    beat = f" (heartbeat {max(age, 0):.0f} s ago)" if age is not None else ""
    return f"on {mlflow_run.data.tags.get('host', 'an unknown host')}{beat}"


def mark_dead(mlflow_client, mlflow_run, reason: str) -> None:
    mlflow_client.set_tag(mlflow_run.info.run_id, "error", reason)
    mlflow_client.set_terminated(mlflow_run.info.run_id, "KILLED")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
