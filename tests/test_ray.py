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

from helpers import parents_and_children, run_sweep, runs, store_uri

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

    # The report, built by the sweep's process once the jobs were done, and logged to the parent run.
    report_dir = tmp_path / "reports" / "quick"
    assert {"summary.csv", "report.html"} <= {p.name for p in report_dir.iterdir()}
    logged = {a.path for a in MlflowClient(store_uri(tmp_path)).list_artifacts(parents[0].info.run_id, "quick")}
    assert "quick/summary.csv" in logged
