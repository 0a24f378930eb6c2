"""The tracking server goes away in the middle of a run: training finishes, nothing logged is lost (a local
journal keeps it), the run says so loudly, and the journal is sent once the server answers again."""
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT
from helpers import free_port, wait_for

EPOCHS = 4
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts"), "--serve-artifacts"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return True
        except OSError:
            assert proc.poll() is None, "mlflow server exited at start"
            return False

    wait_for(answers, 120, "the mlflow server to answer /health", interval=0.5)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_server_lost_mid_run_then_journal_sent(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    unsent = tmp_path / "unsent"
    # MLflow's client would otherwise retry a refused connection for minutes before the run notices.
    env = {**os.environ, "ABLATION_UNSENT_DIR": str(unsent), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    server = _start_server(tmp_path, port)
    job = None
    try:
        job = subprocess.Popen([sys.executable, "-m", "ablation", "trainer=smoke", f"trainer.epochs={EPOCHS}",
                                "trainer.steps_per_epoch=60", "dataset.train_size=200", f"tracking.uri={uri}",
                                "experiment_name=outage"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        client = MlflowClient(tracking_uri=uri)

        def first_epoch_logged():
            assert job.poll() is None, f"the run ended before its first epoch reached the server: {job.stderr.read()[-2000:]}"
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            return runs[0].info.run_id if runs and client.get_metric_history(runs[0].info.run_id, "val/loss") else None

        run_id = wait_for(first_epoch_logged, 180, "the run's first epoch to reach the server")
        _stop(server)  # the server is gone in the middle of the run
        out, err = job.communicate(timeout=300)
    finally:
        if job is not None and job.poll() is None:
            job.kill()
        _stop(server)

    assert job.returncode != 0, "a run whose metrics did not reach the store must not pass for a plain success"
    assert "stopped answering" in err and str(unsent / run_id) in err, err[-2000:]
    assert (unsent / run_id / "journal.jsonl").exists()

    server = _start_server(tmp_path, port)
    try:
        replay = subprocess.run([sys.executable, "-m", "ablation.tracking", "replay", f"tracking.uri={uri}"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert replay.returncode == 0, replay.stderr[-2000:]
        assert run_id in replay.stdout
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["replayed_from_journal"] == "true"
        for metric in ("val/loss", "train/loss", "gap/loss"):
            steps = [m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, metric)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), metric
        assert "test/accuracy" in run.data.metrics
        artifacts = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id)}
        assert {"history.csv", "learning_curves.png", "model.keras", "config.yaml"} <= artifacts
        assert not (unsent / run_id).exists()
    finally:
        _stop(server)


def _slow_server(delay: float):
    """An HTTP server on loopback that answers every request, after `delay` seconds, as an MLflow server answers
    an experiment search: a busy server, as on a loaded machine."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            body = json.dumps({"experiments": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the probe gave up waiting: what is being tested
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_slow_tracking_server_is_busy_not_absent(monkeypatch):
    """A server that accepts the connection and answers late (a loaded machine) passes the reachability check
    after one patient probe; one that never answers in time is still a one-line error."""
    import importlib

    from ablation.core.errors import ConfigError

    store = importlib.import_module("ablation.tracking.store")  # the module: ablation.tracking.store is also a function

    monkeypatch.setattr(store, "PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(store, "SLOW_PROBE_TIMEOUT_S", 4.0)
    server = _slow_server(1.5)
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        assert store._probe(uri, 0.5) == (None, store.BUSY)  # the quick probe alone would call it unreachable
        store.reach(uri)  # no error: the patient probe got its answer
    finally:
        server.shutdown()
    monkeypatch.setattr(store, "SLOW_PROBE_TIMEOUT_S", 1.0)
    server = _slow_server(3.0)
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ConfigError, match=rf"tracking.uri: cannot reach the MLflow server at {uri} "
                                              rf"\({store.BUSY}\)"):
            store.reach(uri)
    finally:
        server.shutdown()
