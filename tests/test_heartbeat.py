"""Liveness across hosts: a RUNNING run proves it is alive with its heartbeat, so a sweep on another machine leaves
a live run of the same combination alone and takes a dead one over. Two real processes share one SQLite store and
present different host names ($ABLATION_HOST): the holder (node-a) keeps runs open and heart-beating; this test
process (node-b) judges them."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from ablation import tracking
from ablation.tracking import heartbeat, process
from helpers import wait_for

PERIOD = "0.2"  # the holder's heartbeat period (s)
GRACE = 2.0  # how old node-b lets a heartbeat get (s)

# A sweep's process on node-a: its parent run, and two of its jobs' runs (keys k-live and k-other) open and
# heart-beating through the project's own tracking code until the process is killed.
HOLDER = """
import contextlib, json, os, sys, time
from omegaconf import OmegaConf
from ablation import tracking

cfg = OmegaConf.create(sys.argv[1])
parent = tracking.open_parent(cfg, {"overrides": "held"})
os.environ[tracking.PARENT_RUN_ENV] = parent
with contextlib.ExitStack() as stack:
    ids = {"parent": parent}
    for name in ("k-live", "k-other"):
        ids[name] = stack.enter_context(tracking.run(cfg, name, {"config_hash": name})).run_id
    with open(sys.argv[2], "w") as f:
        json.dump(ids, f)
    while True:
        time.sleep(1)
"""


@pytest.fixture
def node_b(monkeypatch):
    monkeypatch.setenv(tracking.HOST_ENV, "node-b")


def _hold(cfg, tmp_path, key=None):
    """Start the holder on node-a; (its process, the ids of its runs) once they are open."""
    ids_file = tmp_path / "held.json"
    holder_cfg = OmegaConf.merge(cfg, {"tracking": {"heartbeat_s": float(PERIOD)}})
    code = HOLDER if key is None else HOLDER.replace('("k-live", "k-other")', f"({key!r},)")
    holder = subprocess.Popen([sys.executable, "-c", code, OmegaConf.to_yaml(holder_cfg, resolve=True), str(ids_file)],
                              env={**os.environ, tracking.HOST_ENV: "node-a"}, stderr=subprocess.PIPE, text=True)

    def opened():
        assert holder.poll() is None, f"the holder ended: {holder.stderr.read()[-3000:]}"
        return ids_file.exists() and ids_file.read_text() and json.loads(ids_file.read_text())

    return holder, wait_for(opened, 120, "the holder to open its runs")


def _beat(client, run_id) -> float:
    return float(client.get_run(run_id).data.tags[heartbeat.TAG])


def _stale(client, ids, grace: float) -> bool:
    """Every run's last heartbeat is older than grace (read from the store, not judged by the code under test)."""
    return all(time.time() - _beat(client, run_id) > grace for run_id in ids)


def test_a_live_run_on_another_host_is_left_alone_and_a_dead_one_taken_over(make_cfg, tmp_path, node_b):
    cfg = make_cfg("experiment_name=hosts", f"tracking.heartbeat_grace_s={GRACE}")
    client = tracking.client(cfg.tracking)
    holder, ids = _hold(cfg, tmp_path)
    try:
        first = {name: _beat(client, run_id) for name, run_id in ids.items()}
        # Longer than the grace after the runs opened: only fresh heartbeats keep them alive now.
        wait_for(lambda: all(_beat(client, run_id) > first[name] + GRACE for name, run_id in ids.items()), 60,
                 "heartbeats past the grace")
        run = client.get_run(ids["k-live"])
        assert run.data.tags["host"] == "node-a" and process.may_be_alive(run, cfg.tracking)

        # node-b's checks leave every live run of node-a RUNNING.
        found = tracking.previous_runs(cfg, "k-live")
        assert found.finished is None and found.running.info.run_id == ids["k-live"]
        assert found.where.startswith("on node-a (heartbeat ") and found.where.endswith(" s ago)")
        assert tracking.finished_run(cfg, "k-live") is None
        assert tracking.close_dead_children(cfg, ids["parent"], grace_s=0) == []
        other_parent = tracking.open_parent(cfg, {"overrides": "node-b"})  # closes dead parents first
        tracking.close_parent(cfg, other_parent, "FINISHED")
        assert {name: client.get_run(i).info.status for name, i in ids.items()} == dict.fromkeys(ids, "RUNNING")

        # kill -9: nobody closes the runs; once their heartbeats are older than the grace, node-b takes them over.
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        wait_for(lambda: _stale(client, ids.values(), GRACE), 60, "the heartbeats to grow older than the grace")
        found = tracking.previous_runs(cfg, "k-live")
        assert found.finished is None and found.running is None
        assert tracking.close_dead_children(cfg, ids["parent"], grace_s=0) == ["k-other"]
        tracking.close_parent(cfg, tracking.open_parent(cfg, {"overrides": "node-b"}), "FINISHED")
        runs = {name: client.get_run(i) for name, i in ids.items()}
        assert {name: r.info.status for name, r in runs.items()} == dict.fromkeys(ids, "KILLED")
        assert "process died" in runs["k-live"].data.tags["error"]
        assert "sweep's process died" in runs["parent"].data.tags["error"]
    finally:
        holder.kill()
        holder.wait()


def test_the_rule_for_each_kind_of_running_run(make_cfg, node_b, monkeypatch):
    """Same host: a gone pid is dead at once, whatever the heartbeat says. Another host: the heartbeat alone. No
    heartbeat (runs recorded before): alive only as a live pid on this host. An earlier attempt at this process's
    own job (a launcher's retry or requeue): dead."""
    cfg = make_cfg("experiment_name=rule", f"tracking.heartbeat_grace_s={GRACE}")
    client = tracking.client(cfg.tracking)
    exp_id = tracking.experiment_id(client, cfg.tracking, "rule")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fresh, old = f"{time.time():.1f}", f"{time.time() - 10 * GRACE:.1f}"
    cases = {  # name: (host, pid, heartbeat or None, may be alive, known dead)
        "here-gone-fresh": ("node-b", gone.pid, fresh, False, True),
        "here-live-fresh": ("node-b", live.pid, fresh, True, False),
        "here-live-old": ("node-b", live.pid, old, False, True),
        "here-live-none": ("node-b", live.pid, None, True, False),
        "here-this-process": ("node-b", os.getpid(), fresh, False, False),
        "away-fresh": ("node-a", gone.pid, fresh, True, False),
        "away-old": ("node-a", live.pid, old, False, True),
        "away-none": ("node-a", live.pid, None, False, False),
        # An earlier attempt at this process's own job (its launch tag is ours): dead, whatever its heartbeat.
        "away-fresh-our-launch": ("node-a", live.pid, fresh, False, True),
        "here-live-our-launch": ("node-b", live.pid, fresh, False, True),
        "here-this-process-our-launch": ("node-b", os.getpid(), fresh, False, False),
    }
    monkeypatch.setenv(tracking.LAUNCH_ENV, "sweep-7")
    try:
        for name, (host, pid, beat, alive, dead) in cases.items():
            tags = {"host": host, "pid": str(pid), **({heartbeat.TAG: beat} if beat else {}),
                    "launch": "sweep-7" if name.endswith("our-launch") else "sweep-3"}
            run = client.get_run(client.create_run(exp_id, run_name=name, tags=tags).info.run_id)
            assert (process.may_be_alive(run, cfg.tracking), process.dead(run, cfg.tracking)) == (alive, dead), name
    finally:
        live.kill()
        live.wait()


def test_the_grace_defaults_to_three_of_the_runs_own_periods_plus_slack(make_cfg):
    cfg = make_cfg("experiment_name=grace")
    client = tracking.client(cfg.tracking)
    exp_id = tracking.experiment_id(client, cfg.tracking, "grace")
    run = client.get_run(client.create_run(exp_id, tags=heartbeat.tags(2.0)).info.run_id)
    assert cfg.tracking.heartbeat_s == 30 and cfg.tracking.heartbeat_grace_s is None
    assert process.grace_s(run, cfg.tracking) == 3 * 2.0 + process.SLACK_S
    assert process.grace_s(run, OmegaConf.create({"heartbeat_grace_s": 7})) == 7


def test_a_run_beats_while_open_and_at_epoch_ends_and_stops_when_closed(make_cfg):
    cfg = make_cfg("experiment_name=beats", "tracking.heartbeat_s=0.1")
    client = tracking.client(cfg.tracking)
    with tracking.run(cfg, "beating", {"seed": 0}) as tracker:
        first = _beat(client, tracker.run_id)
        assert client.get_run(tracker.run_id).data.tags[heartbeat.PERIOD_TAG] == "0.1"
        wait_for(lambda: _beat(client, tracker.run_id) > first, 30, "the heartbeat to be refreshed")
        assert tracker.heartbeat.running
    assert not tracker.heartbeat.running
    last = _beat(client, tracker.run_id)
    time.sleep(0.5)
    assert _beat(client, tracker.run_id) == last
    assert client.get_run(tracker.run_id).info.status == "FINISHED"

    slow = make_cfg("experiment_name=beats", "tracking.heartbeat_s=3600")
    with tracking.run(slow, "epochs", {"seed": 0}) as tracker:
        first = _beat(client, tracker.run_id)
        time.sleep(heartbeat.MIN_EPOCH_BEAT_S + 0.2)
        tracker.log_epoch({"epoch": 1, "train/loss": 1.0})  # an epoch's end beats now, not an hour later
        wait_for(lambda: _beat(client, tracker.run_id) > first, 30, "the epoch's heartbeat")


def test_a_failed_heartbeat_is_logged_at_debug_and_tried_again(make_cfg, caplog):
    cfg = make_cfg("experiment_name=failing")
    client = tracking.client(cfg.tracking)
    tracking.experiment_id(client, cfg.tracking, "failing")
    caplog.set_level(logging.DEBUG, logger=heartbeat.__name__)
    beating = heartbeat.Heartbeat(client, "0" * 32, 0.05).start()  # no such run: every write fails
    try:
        wait_for(lambda: sum("not recorded" in r.getMessage() for r in caplog.records) >= 2, 30,
                 "two failed heartbeats")
        assert beating.running
        assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == heartbeat.__name__)
    finally:
        beating.stop()
    assert not beating.running


def test_the_host_name_can_be_set(monkeypatch, make_cfg):
    monkeypatch.setenv(tracking.HOST_ENV, "node-z")
    cfg = make_cfg("experiment_name=named")
    with tracking.run(cfg, "one", {"seed": 0}) as tracker:
        pass
    assert tracking.client(cfg.tracking).get_run(tracker.run_id).data.tags["host"] == "node-z"
    monkeypatch.delenv(tracking.HOST_ENV)
    import socket

    assert tracking.host_name() == socket.gethostname()


@pytest.mark.slow
def test_a_second_sweep_skips_a_combination_running_on_another_host_and_trains_it_once_dead(make_cfg, tmp_path,
                                                                                            node_b, caplog):
    from ablation.training.plan import plan
    from ablation.training.run import run

    cfg = make_cfg("experiment_name=takeover", f"tracking.heartbeat_grace_s={GRACE}")
    key = plan(cfg).key
    client = tracking.client(cfg.tracking)
    holder, ids = _hold(cfg, tmp_path, key=key)
    try:
        caplog.set_level(logging.INFO, logger="ablation.training.run")
        skipped = run(cfg)
        assert skipped == {"run_id": ids[key], "skipped": True, "running": True}
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("skip "))
        assert "running on node-a (heartbeat " in line and ids[key] in line

        holder.send_signal(signal.SIGKILL)
        holder.wait()
        wait_for(lambda: _stale(client, [ids[key]], GRACE), 60, "the heartbeat to grow older than the grace")
        trained = run(cfg)
        assert not trained["skipped"] and trained["run_id"] != ids[key]
        assert client.get_run(ids[key]).info.status == "KILLED"
        new = client.get_run(trained["run_id"])
        assert new.info.status == "FINISHED" and new.data.tags["host"] == "node-b"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("override", ["tracking.heartbeat_s=0", "tracking.heartbeat_grace_s=-1",
                                      "tracking.heartbeat_s=often"])
def test_heartbeat_settings_are_checked_before_anything_runs(make_cfg, override):
    from ablation.core.errors import ConfigError
    from ablation.training.config import check_tracking

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key}: expected a number"):
        check_tracking(make_cfg(override))
