"""Which process a run belongs to, so that a run left RUNNING by a process that died (kill -9, a lost machine)
can be told from a live one and marked KILLED."""
from __future__ import annotations

import os
import socket


def process_tags() -> dict[str, str]:
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def on_this_host(mlflow_run) -> bool:
    tags = mlflow_run.data.tags
    return tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit()


def process_gone(mlflow_run) -> bool:
    """True when the run names a process on this machine that no longer exists."""
    return on_this_host(mlflow_run) and not alive(int(mlflow_run.data.tags["pid"]))


def may_be_alive(mlflow_run) -> bool:
    """A RUNNING run whose process is alive on this machine, other than this one (which is not training it)."""
    return (on_this_host(mlflow_run) and mlflow_run.data.tags["pid"] != str(os.getpid())
            and alive(int(mlflow_run.data.tags["pid"])))


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

