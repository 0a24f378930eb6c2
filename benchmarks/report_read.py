"""What the report's reading of an experiment costs against a tracking server, old way and new way side by side.

A real `mlflow server` on loopback (started here over a SQLite file in a temporary folder, unless --server names
one already running, e.g. the PostgreSQL-backed one of scripts/server.sh) receives N runs as run.py records them:
the tags and params the report reads, summary metrics, and E epochs of each per-epoch curve the report reads
(report.CURVE_METRICS; every run monitors val_accuracy, so all of them are read). Then the report's reading is
timed, alternating old and new, fastest of --repeats each:

    runs table   old: mlflow.search_runs(max_results=50000), one request per 10,000 runs and a silent cap at 50,000
                 new: tracking.load_runs, page by page to the last run (bulk.PAGE_SIZE a page)
    histories    old: one get_metric_history per run and curve, in turn (about 3 N round trips)
                 new: report.histories: the same requests, bulk.WORKERS at a time

Both ways' histories are checked to be the same rows. Logging is not timed.

    python benchmarks/report_read.py [--runs 1000] [--epochs 60] [--server URI] [--out FILE]   (make bench SCALE=1)
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, installed, md_table  # noqa: E402

OUT = ROOT / "runs" / "bench" / "report_read.md"
EXPERIMENT = "report_read"
POLICIES = ("none", "hflip", "shift", "rotate", "zoom", "vflip", "idg_classic", "cutout", "mixup", "randaugment")


@contextmanager
def loopback_server(folder: Path, workers: int):
    """`mlflow server` over folder/mlflow.db on a free loopback port; its URI, stopped at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
                             str(folder / "artifacts"), "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("mlflow server did not answer /health within 120 s") from None
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()


def log_runs(uri: str, n: int, epochs: int, curves: tuple[str, ...]) -> str:
    """n finished runs in experiment EXPERIMENT (a fresh one: its id)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = f"{EXPERIMENT}_{int(time.time())}"
    exp_id = client.create_experiment(name)

    def one(i: int) -> None:
        policy, seed = POLICIES[i % len(POLICIES)], i // len(POLICIES)
        run = client.create_run(exp_id, run_name=f"{policy}/small_cnn/s{seed}", tags={
            "dataset": "digits", "model": "small_cnn", "augmentation": policy, "seed": str(seed),
            "config_hash": f"h{i}", "experiment": name})
        metrics = [Metric(k, 0.5 + i % 7 / 100, 0, 0) for k in
                   ("test/accuracy", "test/loss", "best/gap_loss", "best/gap_accuracy", "best_epoch", "time/total_s")]
        for epoch in range(1, epochs + 1):
            metrics += [Metric(key, 1.0 / epoch + i % 5 / 10, 0, epoch) for key in curves]
        params = [Param("trainer.monitor", "val_accuracy"), Param("trainer.epochs", str(epochs)),
                  *(Param(f"trainer.p{j}", str(j)) for j in range(20))]
        for start in range(0, len(metrics), 1000):  # log_batch takes up to 1,000 metrics
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000], params=params if not start else [])
        client.set_terminated(run.info.run_id, "FINISHED")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    return name


def old_read(uri: str, name: str, curves: tuple[str, ...]):
    """The report's reading before: mlflow.search_runs capped at 50,000, then one history request at a time."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    started = time.perf_counter()
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[name], max_results=50000)
    table_s = time.perf_counter() - started
    client, rows = MlflowClient(tracking_uri=uri), []
    started = time.perf_counter()
    for run_id in runs["run_id"]:
        for metric in curves:
            rows += [(run_id, metric, p.step, p.value) for p in client.get_metric_history(run_id, metric)]
    return runs, pd.DataFrame(rows, columns=["run_id", "metric", "epoch", "value"]), table_s, time.perf_counter() - started


def new_read(cfg, name: str):
    """The report's reading now: tracking.load_runs, then report.histories."""
    from ablation import tracking
    from ablation.report import build as report

    started = time.perf_counter()
    runs = tracking.load_runs(cfg.tracking, name)
    table_s = time.perf_counter() - started
    finished, _, _ = report.runs_of(cfg)
    started = time.perf_counter()
    curves = report.histories(cfg, finished)
    return runs, curves[["run_id", "metric", "epoch", "value"]], table_s, time.perf_counter() - started


def compose(uri: str, name: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "ablation" / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=[f"tracking.uri={uri}", f"experiment_name={name}"])


def same(a, b) -> bool:
    key = ["run_id", "metric", "epoch", "value"]
    return a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server", help="an mlflow server already running (default: one started here over SQLite)")
    parser.add_argument("--server-workers", type=int, default=4, help="the started server's --workers")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from ablation.report.build import CURVE_METRICS
    from ablation.tracking import bulk

    with tempfile.TemporaryDirectory(prefix="ablation-bench-") as tmp:
        with (loopback_server(Path(tmp), args.server_workers) if args.server is None else _given(args.server)) as uri:
            backend = (f"`mlflow server --workers {args.server_workers}` on loopback over a SQLite file (PostgreSQL "
                       "not used)" if args.server is None else f"the mlflow server at {uri} (given)")
            print(f"logging {args.runs} runs x {args.epochs} epochs x {len(CURVE_METRICS)} curves to {backend}",
                  flush=True)
            started = time.perf_counter()
            name = log_runs(uri, args.runs, args.epochs, CURVE_METRICS)
            log_s = time.perf_counter() - started
            print(f"  logged in {log_s:.0f} s", flush=True)
            cfg = compose(uri, name)
            best = {"old": [float("inf")] * 2, "new": [float("inf")] * 2}
            found = {}
            for repeat in range(args.repeats):
                for way in ("old", "new"):
                    runs, curves, table_s, hist_s = old_read(uri, name, CURVE_METRICS) if way == "old" else new_read(cfg, name)
                    best[way] = [min(best[way][0], table_s), min(best[way][1], hist_s)]
                    found[way] = (runs, curves)
                    print(f"  {way} #{repeat + 1}: runs table {table_s:.2f} s, histories {hist_s:.2f} s", flush=True)
    identical = same(found["old"][1], found["new"][1]) and len(found["old"][0]) == len(found["new"][0]) == args.runs
    rows = []
    for label, i in (("runs table", 0), ("histories", 1)):
        rows.append([label, fmt(best["old"][i], 2), fmt(best["new"][i], 2), f"{best['old'][i] / best['new'][i]:.1f}x"])
    old_total, new_total = sum(best["old"]), sum(best["new"])
    rows.append(["total", fmt(old_total, 2), fmt(new_total, 2), f"{old_total / new_total:.1f}x"])
    text = "\n".join([
        f"### The report's reading: {args.runs:,} runs x {args.epochs} epochs x {len(CURVE_METRICS)} curves "
        f"({len(found['new'][1]):,} points), fastest of {args.repeats}",
        "",
        f"Store: {backend}. History requests at once (new): {bulk.WORKERS}. Logging took {log_s:.0f} s (not "
        f"compared). Both ways read the same rows: {'yes' if identical else 'NO'}. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"MLflow {installed('mlflow')}.",
        "",
        md_table(["reading", "old, s", "new, s", "old / new"], rows),
        ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("\n" + text + f"\nwritten to {args.out}")
    if not identical:
        raise SystemExit("the two ways read different rows")


@contextmanager
def _given(uri: str):
    yield uri


if __name__ == "__main__":
    main()
