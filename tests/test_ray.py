"""hydra/launcher=ray: the quick sweep on a real Ray cluster of two nodes (a head and a worker raylet, each with
one CPU) on loopback, its jobs spread over both nodes, every run recorded with its node, the report built at the
end by the sweep's own process."""
import contextlib
import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from ablation.sweep import ray_cluster as launcher
from helpers import parents_and_children, run_sweep, runs, stop_in_third_epoch_and_finish, store_uri

QUICK_RUNS = ["hflip/small_cnn/s0", "hflip/small_cnn/s1", "none/small_cnn/s0", "none/small_cnn/s1"]

# Ray's own local cluster (ray.cluster_utils, as Ray's tests use), in a process of its own: it prints the head's
# address and shuts the cluster down when its stdin closes. One CPU a node, so that two jobs at once take both
# nodes; a small object store, no dashboard.
CLUSTER = """
import sys
from ray.cluster_utils import Cluster

node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
try:
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    sys.stdin.read()
finally:
    cluster.shutdown()
"""


def test_the_jobs_get_the_sweeps_settings_but_never_its_host_node_or_gpus():
    environ = {"ABLATION_HOME": "/shared/runs", "ABLATION_HOST": "submit-host", "ABLATION_NODE": "n0", "ABLATION_LAUNCH": "a-1",
               "MLFLOW_TRACKING_URI": "http://mlflow:5001", "MLFLOW_TRACKING_PASSWORD": "s", "CUDA_VISIBLE_DEVICES": "3",
               "KERAS_BACKEND": "jax", "NO_ALBUMENTATIONS_UPDATE": "1", "NO_ALBUMENTATIONS_UPDATE_X": "1",
               "HOME": "/root", "TF_CPP_MIN_LOG_LEVEL": "2"}
    names = ["ABLATION_", "MLFLOW_", "KERAS_", "NO_ALBUMENTATIONS_UPDATE", "CUDA_"]
    assert launcher.shipped_env(names, environ) == {
        "ABLATION_HOME": "/shared/runs", "MLFLOW_TRACKING_URI": "http://mlflow:5001", "MLFLOW_TRACKING_PASSWORD": "s",
        "KERAS_BACKEND": "jax", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.mark.parametrize("num_gpus,cluster_gpus,expected", [(None, 0, 0), (None, 8, 1), (0.25, 8, 0.25), (0, 8, 0)])
def test_one_gpu_a_job_when_the_cluster_has_gpus_or_the_fraction_asked_for(num_gpus, cluster_gpus, expected,
                                                                            monkeypatch):
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # the sweep's own setting wins
    settings = {"num_gpus": num_gpus, "num_cpus": 2, "max_calls": 1, "max_retries": 3}
    options = launcher.job_options(settings, {"CPU": 16.0, "GPU": float(cluster_gpus)})
    assert (options["num_cpus"], options["num_gpus"], options["max_calls"], options["max_retries"]) == (2, expected, 1, 3)
    # Jobs on GPUs take the memory they use, so that several share one.
    assert options.get("runtime_env") == ({"env_vars": {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}} if expected else None)


def test_a_job_whose_task_died_comes_back_failed(monkeypatch):
    import ray
    from hydra.core.utils import JobStatus

    def crashed(ref):
        raise ray.exceptions.WorkerCrashedError()

    monkeypatch.setattr(ray, "get", crashed)
    result = launcher._returned(object(), ["seed=1"])
    assert (result.status, result.overrides) == (JobStatus.FAILED, ["seed=1"])
    assert isinstance(result._return_value, ray.exceptions.WorkerCrashedError)


@contextlib.contextmanager
def ray_cluster():
    """A two-node Ray cluster on this machine; yields the head's address."""
    process = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        address = process.stdout.readline().strip()
        assert address, f"the Ray cluster did not start (exit status {process.wait(60)})"
        yield address
    finally:
        process.stdin.close()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@pytest.mark.slow
def test_a_sweep_on_a_two_node_ray_cluster_runs_on_both_nodes_and_ends_in_its_report(tmp_path, monkeypatch):
    # Ray's switch for a cluster on the loopback address (it otherwise binds every node to the machine's network
    # address); the cluster's processes, the sweep and its jobs all inherit it.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with ray_cluster() as address:
        assert address.startswith("127.0.0.1:")
        # The nodes started with conftest's cache folder; the sweep has its own, which its jobs only learn from
        # the sweep (hydra.launcher.env): the sweep's process itself decodes no data.
        cache = tmp_path / "cache"
        monkeypatch.setenv("ABLATION_CACHE_DIR", str(cache))
        result = run_sweep(tmp_path, "experiment=quick", "trainer.epochs=1", "hydra/launcher=ray",
                           f"hydra.launcher.address={address}", timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "ray: 4 jobs on 2 node(s) (2 CPUs, 0 GPUs)" in output
    assert "4 trained, 0 skipped" in result.stdout
    for k in range(1, 5):  # each job's progress line comes back through Ray's worker output
        assert f"[{k}/4] " in output

    parents, children = parents_and_children(runs(store_uri(tmp_path), "quick"))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == QUICK_RUNS
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    # Both nodes trained (one CPU each, four jobs at one CPU each); every run names its Ray node, beside its host.
    nodes = {r.data.tags["node"] for r in children}
    assert len(nodes) == 2 and all(len(node) == 56 for node in nodes), nodes
    assert "node" not in parents[0].data.tags

    # Each job's Hydra folder and log are in the sweep's folder, as the sweep's process named it.
    assert sorted(log.parent.name for log in (tmp_path / "sweep").glob("*/*.log")) == ["0", "1", "2", "3"]
    assert any(cache.iterdir())  # the jobs used the sweep's cache folder, not the one the nodes started with

    # The report, built by the sweep's process once the jobs were done, and logged to the parent run.
    report_dir = tmp_path / "reports" / "quick"
    assert {"summary.csv", "report.html"} <= {p.name for p in report_dir.iterdir()}
    logged = {a.path for a in MlflowClient(store_uri(tmp_path)).list_artifacts(parents[0].info.run_id, "quick")}
    assert "quick/summary.csv" in logged


@pytest.mark.slow
@pytest.mark.parametrize("sig,closed", [(signal.SIGKILL, "the process died"), (signal.SIGTERM, "interrupted")])
def test_a_job_whose_worker_dies_is_retried_and_continues_its_run_from_its_last_epoch(tmp_path, monkeypatch, sig,
                                                                                      closed):
    """A lost node or a preempted one, as Ray sees it, in the job's third epoch: its worker process dies (kill -9),
    leaving its run RUNNING, or is stopped (SIGTERM: a node drained), closing its run KILLED and exiting. Ray runs
    the task again; the new attempt takes over the run (a RUNNING one by its `launch` tag, the job's) and continues
    the combination from its last completed epoch (trainer.resume=auto: on under Ray)."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with ray_cluster() as address:
        stopped, _ = stop_in_third_epoch_and_finish(tmp_path, [sig], "hydra/launcher=ray",
                                                    f"hydra.launcher.address={address}")
    assert closed in stopped.data.tags["error"]
