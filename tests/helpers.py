"""Helpers shared by several test modules (fixtures live in conftest.py)."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def textured(channels: int, size: int = 32) -> np.ndarray:
    """An asymmetric, textured uint8 image, so flips, small shifts, warps, colour and contrast changes all show."""
    y, x = np.mgrid[0:size, 0:size]
    base = 40 + 3 * x + 2 * y + 25 * ((x // 4 + y // 3) % 2)
    base[2:7, 3:12] = 250  # an off-centre bright block breaks every symmetry
    planes = [base, (base * 0.6 + 60 * (y > size // 2)), 220 - base * 0.7][:channels]
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (once the probe socket closes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_images(n: int, size: int, channels: int = 3, *, classes: int | None = None, high: int = 256,
                  around=None, spread: int = 15, rng=0):
    """n random uint8 images of size x size x channels, from rng (a seed or a Generator, passed on so that
    successive calls draw different images).

    Uniform in [0, high) by default; with `around` (one level per channel), each pixel is that level plus noise
    in [-spread, spread], clipped to 0-255. With `classes`, returns (images, labels), labels cycling 0..classes-1.
    """
    rng = np.random.default_rng(rng)
    shape = (n, size, size, channels)
    if around is None:
        x = rng.integers(0, high, shape, dtype=np.uint8)
    else:
        base = np.asarray(around, np.int64).reshape(1, 1, 1, channels)
        x = np.clip(base + rng.integers(-spread, spread + 1, shape), 0, 255).astype(np.uint8)
    return x if classes is None else (x, np.arange(n) % classes)


# What a test's sweep leaves out unless its overrides name it: the lenses and the logged models, which cost
# seconds per run and which only the tests about them read.
LEAN = {"lenses": "lenses=off", "tracking.log_model": "tracking.log_model=false"}


def lean(overrides) -> list[str]:
    """The LEAN overrides that the given ones leave open (a sweep that registers a model keeps logging models)."""
    names = {o.lstrip("+~").partition("=")[0] for o in overrides}
    if "tracking.register_model" in names:
        names.add("tracking.log_model")
    return [value for key, value in LEAN.items() if key not in names]


# An empty MLflow SQLite store that MLflow created (conftest's store_template fixture fills this in once per test
# process). MLflow creates and migrates a new store's tables the first time it opens it, about 3 s of each sweep's
# process; a copy of one it made opens at once.
STORE_TEMPLATE: list[Path] = []


def seed_store(folder: Path) -> None:
    """A copy of the empty STORE_TEMPLATE as folder/mlflow.db, unless folder holds a store already."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    if STORE_TEMPLATE and not (folder / "mlflow.db").exists():
        shutil.copyfile(STORE_TEMPLATE[0], folder / "mlflow.db")


def sweep_command(tmp_path: Path, *overrides: str, name: str = "sweep") -> list[str]:
    """`python -m ablation -m <overrides>` with its store (seed_store), artifacts, reports and sweep folder under
    tmp_path, and without lenses or logged models unless the overrides ask for them (lean)."""
    seed_store(tmp_path)
    return [sys.executable, "-m", "ablation", "-m", *lean(overrides), *overrides, f"tracking.uri={store_uri(tmp_path)}",
            f"tracking.artifact_root={tmp_path / 'artifacts'}", f"paths.reports={tmp_path / 'reports'}",
            f"hydra.sweep.dir={tmp_path / name}"]


def run_sweep(tmp_path: Path, *overrides: str, name: str = "sweep", timeout: float = 600):
    """Run sweep_command(...) from the repository root to its end; the CompletedProcess, output captured."""
    return subprocess.run(sweep_command(tmp_path, *overrides, name=name), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def store_uri(tmp_path: Path) -> str:
    """The SQLite tracking store that sweep_command(tmp_path, ...) uses."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def runs(uri: str, experiment: str, query: str = "") -> list:
    """Every run of an experiment in a tracking store ([] when the experiment does not exist yet)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], query, max_results=1000) if exp else []


def parents_and_children(found: list) -> tuple[list, list]:
    """A sweep's runs split into its parent runs (tag sweep=parent) and the job runs."""
    return ([r for r in found if r.data.tags.get("sweep") == "parent"],
            [r for r in found if r.data.tags.get("sweep") != "parent"])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll predicate() until it returns something truthy (returned) or fail, saying what was awaited.

    predicate may raise AssertionError to fail at once (a process that died while we waited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def mlflow_server(folder: Path, *options: str, env: dict, workers: int = 1, what: str = "mlflow server"):
    """A real `mlflow server <options>` on a free loopback port over its own SQLite store and artifact folder in
    folder (its log: folder/server.log), answering /health; yields its URI and stops it (its whole process group)
    at the end."""
    import urllib.request

    uri = f"http://127.0.0.1:{free_port()}"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", *options, "--host", "127.0.0.1", "--port", uri.rsplit(":", 1)[1],
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
         str(folder / "artifacts"), "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def answers():
        if server.poll() is not None:
            raise AssertionError(f"{what} exited: {(folder / 'server.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            return True
        except OSError:
            return False

    try:
        wait_for(answers, 120, f"the {what} to answer /health", interval=0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:  # its workers take their time to finish gracefully
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()


# One combination long enough to be stopped in its third epoch (tests/test_preemption.py, tests/test_ray.py).
PREEMPTED_EPOCHS = 5
PREEMPTED = ("augmentation=none", "seed=0", "trainer=smoke", f"trainer.epochs={PREEMPTED_EPOCHS}",
             "trainer.steps_per_epoch=60", "dataset.train_size=200", "experiment_name=preempted")


def training_epochs(uri: str, experiment: str, backups: Path, process) -> tuple[int, int] | None:
    """(the pid of the process training a run of the experiment, the epochs its backup holds) once it holds two or
    more (trainer.resume's backup under backups); None before. Fails when process (the sweep) has ended."""
    import json

    assert process.poll() is None, f"the sweep ended before its job was stopped: {process.stderr.read()[-2000:]}"
    running = [r for r in runs(uri, experiment) if r.info.status == "RUNNING" and "config_hash" in r.data.tags]
    metadata = list(backups.glob("*/keras/training_metadata.json"))
    if not (running and metadata):
        return None
    try:
        done = int(json.loads(metadata[0].read_text())["epoch"])
    except ValueError:  # Keras is writing it at this moment
        return None
    return (int(running[0].data.tags["pid"]), done) if done >= 2 else None


def stop_in_third_epoch_and_finish(tmp_path: Path, signals: list[int], *launcher: str):
    """The PREEMPTED sweep under the launcher's overrides: its job's process gets the signals, one every 0.5 s,
    once the job has completed two epochs; the sweep must still end well, its one combination stopped (KILLED) and continued in another
    process to a FINISHED run tagged resumed_from the first, with every epoch's metrics once. Returns (stopped,
    resumed)."""
    uri = store_uri(tmp_path)
    backups = Path(os.environ["ABLATION_BACKUP_DIR"])
    proc = subprocess.Popen(sweep_command(tmp_path, *PREEMPTED, *launcher), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pid, completed = wait_for(lambda: training_epochs(uri, "preempted", backups, proc), 300,
                                  "the job to complete two epochs", interval=0.1)
        for sig in signals:
            os.kill(pid, sig)
            time.sleep(0.5)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    [sweep], children = parents_and_children(runs(uri, "preempted"))
    assert sweep.info.status == "FINISHED"
    assert not list(backups.glob("*/keras")), "the backup of a finished combination is removed"
    return resumed_whole(uri, children, completed, PREEMPTED_EPOCHS)


def resumed_whole(uri: str, children: list, completed: int, epochs: int):
    """A combination stopped after `completed` epochs and continued in another process: its runs are the stopped
    one, KILLED, and the one that continued it, FINISHED, tagged resumed_from the first, with every epoch's
    metrics once. Returns (stopped, resumed)."""
    from mlflow.tracking import MlflowClient

    by_status = {r.info.status: r for r in children}
    assert sorted(r.info.status for r in children) == ["FINISHED", "KILLED"], by_status
    stopped, resumed = by_status["KILLED"], by_status["FINISHED"]
    assert resumed.data.tags["pid"] != stopped.data.tags["pid"]  # another process
    assert resumed.data.tags["launch"] == stopped.data.tags["launch"]  # another attempt at the same job
    assert resumed.data.tags["resumed_from"] == stopped.info.run_id
    assert int(resumed.data.tags["resumed_at_epoch"]) >= completed
    client = MlflowClient(tracking_uri=uri)
    for metric in ("val/loss", "train/loss", "gap/loss"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, metric)]
        assert sorted(steps) == list(range(1, epochs + 1)), metric  # every epoch once, none twice
    return stopped, resumed
