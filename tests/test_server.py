"""The tracking server as users start it (scripts/server.sh, behind `make server`): PostgreSQL backend store,
artifacts proxied by the server, bound to 127.0.0.1; a parallel sweep (4 joblib jobs) against it loses nothing.
PostgreSQL that cannot be installed or started fails these tests: they never skip."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT
from helpers import free_port

SCRIPT = ROOT / "scripts" / "server.sh"
EPOCH_KEYS = ["train/loss", "train/accuracy", "train_clean/loss", "train_clean/accuracy", "val/loss", "val/accuracy",
              "gap/loss", "gap/accuracy", "train/learning_rate", "time/epoch_s", "throughput/images_per_s",
              "perf/input_wait_fraction"]
FINAL_KEYS = ["test/loss", "test/accuracy", "best_epoch", "best/gap_loss", "best/val_loss", "time/fit_s"]
# What every run of the quick sweep logs (ablation/training/run.py); each artifact a run lists is checked.
ARTIFACTS = {"config.yaml", "policy.json", "augmentation_preview.png", "history.csv", "learning_curves.png",
             "model.keras"}


def _script(env, *args, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets listening on a TCP port (Linux /proc/net/tcp{,6}), as hex strings."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.append(address)
    return found


def _answers(uri: str) -> bool:
    try:
        urllib.request.urlopen(f"{uri}/health", timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server():
    """The server started by the users' script in a private folder on free ports; stopped at the end."""
    # Not under pytest's tmp_path: PostgreSQL's user must be able to reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="ablation-server-"))
    folder.chmod(0o755)
    port, pg_port = free_port(), free_port()
    env = {**os.environ, "PY": sys.executable, "ABLATION_SERVER_DIR": str(folder),
           "ABLATION_SERVER_PORT": str(port), "ABLATION_PG_PORT": str(pg_port)}
    env.pop("ABLATION_SERVER_HOST", None)  # the default bind address is what is tested
    started = _script(env, "start")
    try:
        assert started.returncode == 0, f"scripts/server.sh start failed:\n{started.stdout}\n{started.stderr}"
        uri = re.search(r"^tracking URI: (\S+)", started.stdout, re.M).group(1)
        backend = re.search(r"^backend: (\S+)", started.stdout, re.M).group(1)
        yield {"uri": uri, "backend": backend, "port": port, "pg_port": pg_port, "dir": folder, "env": env,
               "output": started.stdout}
    finally:
        _script(env, "stop", timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_an_unreachable_server_is_one_line_before_anything_trains(tmp_path):
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "ablation", "tracking=server", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT,
        env={**os.environ, "ABLATION_SERVER_PORT": str(port)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith(f"error: tracking.uri: cannot reach the MLflow server at http://127.0.0.1:{port} (")
    assert "Traceback" not in result.stderr


def test_server_answers_on_loopback_only_with_a_postgresql_store(server):
    assert server["uri"] == f"http://127.0.0.1:{server['port']}"
    assert _answers(server["uri"])
    assert server["backend"].startswith("postgresql") and f"@127.0.0.1:{server['pg_port']}/mlflow" in server["backend"]
    # MLflow and PostgreSQL both listen on 127.0.0.1 only (0100007F in /proc/net/tcp), never on every interface.
    for port in (server["port"], server["pg_port"]):
        assert _listening(port) == ["0100007F"], (port, _listening(port))
    pg_data = server["dir"] / "pg" / "data"
    assert (pg_data / "PG_VERSION").exists() and (pg_data / "postmaster.pid").exists()
    assert (server["dir"] / "pgpass").stat().st_mode & 0o077 == 0  # the database password: the caller's only


def test_starting_again_is_harmless(server):
    pid = (server["dir"] / "mlflow.pid").read_text().strip()
    postmaster = (server["dir"] / "pg" / "data" / "postmaster.pid").read_text().split()[0]
    again = _script(server["env"], "start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and f"tracking URI: {server['uri']}" in again.stdout
    assert (server["dir"] / "mlflow.pid").read_text().strip() == pid
    assert (server["dir"] / "pg" / "data" / "postmaster.pid").read_text().split()[0] == postmaster
    status = _script(server["env"], "status")
    assert status.returncode == 0 and "postgresql: running" in status.stdout and f"at {server['uri']}" in status.stdout


@pytest.mark.slow
def test_parallel_sweep_records_every_run_metric_point_and_artifact(server, tmp_path):
    experiment = f"server-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "ablation", "-m", "experiment=quick", "tracking=server", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=4", f"experiment_name={experiment}", f"hydra.sweep.dir={tmp_path}/sweep",
         f"paths.reports={tmp_path}/reports"],
        cwd=ROOT, env={**os.environ, "ABLATION_SERVER_PORT": str(server["port"])}, capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "4 trained, 0 skipped" in result.stdout

    client = MlflowClient(tracking_uri=server["uri"])
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == [
        "hflip/small_cnn/s0", "hflip/small_cnn/s1", "none/small_cnn/s0", "none/small_cnn/s1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)

    for run in children:
        run_id = run.info.run_id
        epochs = int(run.data.params["trainer.epochs"])
        for key in EPOCH_KEYS:  # step = epoch number, from 1
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, epochs + 1)), key
        assert set(FINAL_KEYS) <= set(run.data.metrics)
        # Proxied: the run stores an mlflow-artifacts: location, the files land in the server's folder.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        listed = {a.path for a in client.list_artifacts(run_id)}
        assert ARTIFACTS <= listed, ARTIFACTS - listed
        local = tmp_path / "download" / run_id
        for name in listed:
            path = Path(client.download_artifacts(run_id, name, str(local)))
            assert path.stat().st_size > 0, name
            on_server = list((server["dir"] / "artifacts").rglob(f"{run_id}/artifacts/{name}"))
            assert len(on_server) == 1 and on_server[0].read_bytes() == path.read_bytes(), name
        assert zipfile.is_zipfile(local / "model.keras")
        history = pd.read_csv(local / "history.csv")
        assert list(history["epoch"]) == list(range(1, epochs + 1))
        logged = {m.step: m.value for m in client.get_metric_history(run_id, "val/loss")}
        assert history.set_index("epoch")["val/loss"].to_dict() == pytest.approx(logged)

    # The records are in PostgreSQL itself: every run and every per-epoch metric point.
    import psycopg

    backend = server["backend"].split("://", 1)[1]
    user = backend.split("@", 1)[0]
    with psycopg.connect(host="127.0.0.1", port=server["pg_port"], dbname="mlflow", user=user,
                         passfile=str(server["dir"] / "pgpass")) as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = %s",
                       (experiment,))
        assert cursor.fetchone()[0] == 5
        cursor.execute("SELECT count(*) FROM metrics WHERE run_uuid = ANY(%s) AND key = ANY(%s)",
                       ([r.info.run_id for r in children], EPOCH_KEYS))
        assert cursor.fetchone()[0] == sum(int(r.data.params["trainer.epochs"]) for r in children) * len(EPOCH_KEYS)


def test_stop_stops_both_and_again_is_harmless(server):
    stopped = _script(server["env"], "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert "mlflow stopped" in stopped.stdout and "PostgreSQL stopped" in stopped.stdout
    assert not _answers(server["uri"])
    assert not (server["dir"] / "mlflow.pid").exists()
    assert not (server["dir"] / "pg" / "data" / "postmaster.pid").exists()
    assert _listening(server["pg_port"]) == [] and _listening(server["port"]) == []
    again = _script(server["env"], "stop", timeout=120)
    assert again.returncode == 0 and "stopped" in again.stdout and "mlflow stopped" not in again.stdout
    status = _script(server["env"], "status")
    assert status.returncode != 0 and "postgresql: stopped" in status.stdout and "mlflow: stopped" in status.stdout
