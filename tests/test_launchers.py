"""Parallel and cluster launchers: Hydra's joblib launcher (each job in a fresh process of its own) and its
submitit launcher (submitit_local runs the SLURM code path on this machine), both through the ablation sweeper
and callback into a temporary MLflow store."""
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from ablation.sweep import jobs
from conftest import ROOT, compose_config
from helpers import parents_and_children, run_sweep, runs, store_uri, sweep_command, wait_for

QUICK_RUNS = ["hflip/small_cnn/s0", "hflip/small_cnn/s1", "none/small_cnn/s0", "none/small_cnn/s1"]
# Every line of a job's Hydra log names the process that wrote it.
PID_LOG_FORMAT = "hydra.job_logging.formatters.simple.format='pid=%(process)d %(name)s %(message)s'"


# ---------------------------------------------------------------------------------------------------------
# Job: the sweep's environment and a fresh process per job, without a sweep around it

def _hydra_config(tmp_path, *overrides):
    cfg = compose_config(*overrides, hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.name = "job"
        cfg.hydra.job.num = 3
    return cfg


# Task functions run in fresh processes: this module must import quickly there (no TensorFlow, no MLflow).
def _where_am_i(cfg):
    """Which process runs the task, and what it sees."""
    return os.getpid(), dict(os.environ), HydraConfig.get().job.num, cfg.experiment_name


def _fails(cfg):
    raise ValueError(f"bad seed {cfg.seed}")


@pytest.fixture
def hydra_config(tmp_path):
    saved = HydraConfig.instance().cfg
    cfg = _hydra_config(tmp_path)
    HydraConfig.instance().set_config(cfg)
    yield cfg
    HydraConfig.instance().cfg = saved


def test_a_fresh_process_per_call_carrying_the_sweeps_environment(hydra_config, monkeypatch):
    from ablation import tracking

    task_cfg = hydra_config.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, "parent-123")
    job = jobs.Job(_where_am_i, fresh_process=True)
    job.capture_env()
    # A process that did not inherit the variable (a worker started earlier, another machine) still gets it.
    monkeypatch.delenv(tracking.PARENT_RUN_ENV)
    first, second = job(task_cfg), job(task_cfg)
    for _pid, env, num, experiment in (first, second):
        assert (env.get(tracking.PARENT_RUN_ENV), num, experiment) == ("parent-123", 3, task_cfg.experiment_name)
    assert len({first[0], second[0], os.getpid()}) == 3

    in_process = jobs.Job(_where_am_i, fresh_process=False)
    assert in_process(task_cfg)[0] == os.getpid()


def test_a_jobs_exception_comes_back_from_its_process(hydra_config):
    task_cfg = hydra_config.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    with pytest.raises(ValueError, match="^bad seed 0$"):
        jobs.Job(_fails, fresh_process=True)(task_cfg)


@pytest.mark.parametrize("launcher,fresh", [("basic", False), ("joblib", True), ("submitit_local", False),
                                            ("submitit_slurm", False), ("ray", False)])
def test_only_joblib_jobs_need_a_process_of_their_own_by_default(tmp_path, launcher, fresh):
    cfg = _hydra_config(tmp_path, f"hydra/launcher={launcher}")
    assert jobs.fresh_by_default(cfg.hydra.launcher) is fresh
    assert cfg.hydra.sweeper.fresh_process is None  # null: decided by the launcher


@pytest.mark.slow
def test_make_sweep_jobs_uses_the_joblib_launcher():
    def command(*args):
        # Under `make test` the parent make's settings would add "Entering directory" lines: start clean.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        out = subprocess.run(["make", "--no-print-directory", "-n", "sweep", *args], cwd=ROOT, capture_output=True,
                             text=True, check=True, env=env)
        return next(line for line in out.stdout.splitlines() if "-m ablation" in line)

    assert "-m ablation -m experiment=digits_ablation hydra/launcher=joblib hydra.launcher.n_jobs=2" in command("JOBS=2")
    # By default as many jobs at once as the device takes; JOBS=1 one after another in the sweep's process.
    assert "-m ablation -m experiment=digits_ablation hydra/launcher=packed" in command()
    assert "hydra/launcher" not in command("JOBS=1") and "-m ablation -m experiment=digits_ablation" in command("JOBS=1")


# ---------------------------------------------------------------------------------------------------------
# Whole sweeps

QUICK = ("experiment=quick", "tracking.log_model=false", PID_LOG_FORMAT)


def _runs(tmp_path):
    return parents_and_children(runs(store_uri(tmp_path), "quick"))


def _every_run_nested_under_the_parent(tmp_path):
    parents, children = _runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["sweep_size"] == "4"
    assert sorted(r.info.run_name for r in children) == QUICK_RUNS
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)


def _training_pids(tmp_path) -> dict[int, int]:
    """Job number -> the process that trained it, from what ablation.training.run logged into the job's Hydra log."""
    pids = {}
    for log in (tmp_path / "sweep").glob("*/*.log"):
        found = {int(m.group(1)) for m in re.finditer(r"^pid=(\d+) ablation\.training\.run ", log.read_text(), re.M)}
        assert len(found) == 1, (log, found)
        pids[int(log.parent.name)] = found.pop()
    return pids


def _scores(tmp_path) -> dict[str, dict[str, float]]:
    """Run name -> what it logged, but how long it took."""
    return {r.info.run_name: {k: v for k, v in r.data.metrics.items() if not k.startswith(("time/", "throughput/", "perf/"))}
            for r in _runs(tmp_path)[1]}


def _artifacts(tmp_path) -> dict[str, list[str]]:
    """Run name -> the paths of its artifacts, folders opened."""
    client = MlflowClient(store_uri(tmp_path))

    def walk(run_id, path=None):
        for item in client.list_artifacts(run_id, path):
            yield from walk(run_id, item.path) if item.is_dir else [item.path]
    return {r.info.run_name: sorted(walk(r.info.run_id)) for r in _runs(tmp_path)[1]}


def _processes_with(marker: str) -> list[int]:
    """The processes whose environment carries marker (a sweep's, and whatever it started)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue  # ended meanwhile, or not ours to read
    return found


@pytest.mark.slow
def test_joblib_sweep_runs_every_job_in_a_fresh_process_and_packed_runs_match_it(tmp_path):
    fresh, packed = tmp_path / "fresh", tmp_path / "packed"
    fresh.mkdir()
    packed.mkdir()
    result = run_sweep(fresh, *QUICK, "trainer.epochs=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "4 trained, 0 skipped" in result.stdout
    _every_run_nested_under_the_parent(fresh)
    for k in range(1, 5):  # the sweep's size reached every job's process
        assert f"[{k}/4] " in result.stdout
    # Two workers, four jobs: reused workers would show two processes, not four.
    pids = _training_pids(fresh)
    assert sorted(pids) == [0, 1, 2, 3]
    assert len(set(pids.values())) == 4, pids

    # hydra/launcher=packed: two workers that each take job after job, keeping their compiled model.
    marker = f"ABLATION_TEST_MARKER={uuid.uuid4().hex}"
    key, value = marker.split("=")
    result = subprocess.run(sweep_command(packed, *QUICK, "trainer.epochs=1", "hydra/launcher=packed",
                                          "hydra.launcher.n_jobs=2"),
                            cwd=ROOT, capture_output=True, text=True, timeout=400, env={**os.environ, key: value})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "packed: 2 jobs at once" in result.stdout + result.stderr
    _every_run_nested_under_the_parent(packed)
    assert len(set(_training_pids(packed).values())) == 2
    # The same numbers as each run alone in a fresh process.
    alone, together = _scores(fresh), _scores(packed)
    assert alone.keys() == together.keys() and all(alone.values())
    for name, metrics in alone.items():
        assert together[name].keys() == metrics.keys(), name
        for metric, value in metrics.items():
            assert together[name][metric] == pytest.approx(value, abs=1e-5), (name, metric)
    # ... and the same artifacts (the model, curves, predictions).
    files = _artifacts(fresh)
    assert all(files.values()) and _artifacts(packed) == files
    # No worker outlives the sweep.
    wait_for(lambda: not _processes_with(marker), 30, "the packed sweep's workers to end")


@pytest.mark.slow
def test_submitit_local_sweep_nests_every_run_under_the_parent(tmp_path):
    # Two batches of two jobs: the sweeper launches twice through submitit.
    result = run_sweep(tmp_path, *QUICK, "trainer.epochs=1", "hydra/launcher=submitit_local",
                       "hydra.launcher.timeout_min=5", "hydra.sweeper.max_batch_size=2", timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "4 trained, 0 skipped" in result.stdout
    _every_run_nested_under_the_parent(tmp_path)
    assert len(set(_training_pids(tmp_path).values())) == 4
    # submitit's own folder (pickled jobs and results, each job's output) is inside the sweep's folder.
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 4
    outputs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert all(f"[{k}/4] " in outputs for k in range(1, 5))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "packed"])
def test_ctrl_c_stops_a_joblib_sweep_without_hanging(tmp_path, launcher):
    """Fresh processes per job (joblib) or workers that take job after job (packed): the first Ctrl-C stops it."""
    process = subprocess.Popen(sweep_command(tmp_path, *QUICK, "trainer.epochs=500", f"hydra/launcher={launcher}",
                                             "hydra.launcher.n_jobs=2"),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)

    def running(condition):
        assert process.poll() is None, process.communicate()
        return condition()

    try:
        wait_for(lambda: running((tmp_path / "sweep").exists), 240,
                 "the sweep's process to create the store and its parent run")
        wait_for(lambda: running(lambda: any(r.info.status == "RUNNING" for r in _runs(tmp_path)[1])), 240,
                 "a job to start training", interval=1)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    assert "sweep interrupted" in stdout, stdout[-2000:] + stderr[-3000:]
    parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    # The runs that were training are closed KILLED by the time the sweep's process has exited.
    assert children and {c.info.status for c in children} == {"KILLED"}, [(c.info.run_name, c.info.status) for c in children]
    wait_for(lambda: _group_gone(process.pid), 30, "every worker and job process to exit")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
