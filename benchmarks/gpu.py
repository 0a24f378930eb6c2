"""The GPU headline: how long a CIFAR-10-sized sweep takes on one GPU, projected from a timed slice of it.

The sweep: a synthetic stand-in for CIFAR-10 (50,000 training images of 32x32x3 uint8 plus 10,000 held out: 5,000
validation, 5,000 test; noise, written once by benchmarks/common.write_cifar_like and cached), the 20 policies of
POLICIES (`none` and 19 that run on the device) x 3 seeds x 10 epochs = 60 runs, model=resnet,
augmentation.placement=device, batches of 128, every other setting the package's defaults (the report's lenses, the
logged model, the report at the end).

The slice: SLICE (6 of those policies, one per kind of device cost, seed 0) run as a real sweep: one
`python -m ablation -m ...` command in a fresh process, tracked to a throwaway store, timed from outside and read
back from MLflow. Its wall time falls into three parts:

    start-up    command start -> the sweep's parent MLflow run opens (imports, Hydra, the sweep's checks of
                every combination, the store)
    runs        the parent run opens -> the last run ends (every job: its process where the launcher starts
                one, the backend and device, data, model, fit, the lenses, the logged model)
    report      the last run ends -> the parent run closes (the report built and logged)
    exit        the parent run closes -> the command exits (the launcher's workers, the process)

The projection: start-up + exit + (runs + report) x 60 / slice runs (the report grows with the runs; scaling
it linearly errs on the long side). Targets: at most 30 minutes projected, input wait under 5% (the
fit loop's perf/input_wait_fraction over the runs' epochs 2.., weighted by their training time).

--jobs N runs the slice packed (hydra/launcher=packed, ablation/sweep/packing.py): N worker processes at once on the
one device, each taking job after job and keeping its compiled model, with GPU memory allocated as used
(XLA_PYTHON_CLIENT_PREALLOCATE=false; here also XLA_PYTHON_CLIENT_MEM_FRACTION=0.9/N, so that N processes fit); --compare-packing runs it once sequentially and once with N jobs (default 3)
and prints the ratio of runs per hour. --tiny is the CPU dry run (512 + 128 images, 1 epoch, 2 policies).

    KERAS_BACKEND=jax python benchmarks/gpu.py [--compare-packing] [--jobs N] [--tiny] [overrides ...]
    bash scripts/bench_gpu.sh [same options]     # on the GPU machine: installs .whl/*.whl first (make bench-gpu)

Output: Markdown tables on stdout and in runs/bench/gpu.md (--out; rewritten after each phase), each phase's
sweep log beside it as gpu-<phase>.log.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import fmt, installed, md_table, write_cifar_like  # noqa: E402

OUT = ROOT / "runs" / "bench" / "gpu.md"
DATA = ROOT / "runs" / "bench" / "data"  # the synthetic .npz and its decoded cache, kept between invocations
EXPERIMENT = "gpu_bench"
# The full sweep's 20 policies: the baseline and every shipped policy the device can run (ablation/augment/
# device.py) but `flowers` (rotate + brightness/contrast + flip, which rotate, brightness_contrast and hflip
# cover); `clahe` and `albu_mixed` have no device equivalent.
POLICIES = ["none", "hflip", "vflip", "rotate", "shift", "zoom", "shear", "idg_classic", "random_resized_crop",
            "crop_color", "brightness", "brightness_contrast", "channel_shift", "color_jitter", "noise", "cutout",
            "randaugment", "mixup", "cutmix", "hflip_mixup"]
SEEDS, EPOCHS, BATCH = 3, 10, 128
N_TRAIN, N_EVAL = 50_000, 5_000  # 5,000 validation + 5,000 test = CIFAR-10's 10,000 held out
# One policy per kind of device cost: nothing, a flip, one affine warp, four warps (ImageDataGenerator's
# vocabulary), RandAugment's per-image choice among many ops, and a mix inside the train step.
SLICE = ["none", "hflip", "rotate", "idg_classic", "randaugment", "cutmix"]
TINY = {"n_train": 512, "n_eval": 64, "epochs": 1, "slice": ["none", "hflip"],
        "overrides": ["trainer.clean_train_size=64", "lenses.corruption_images=32"]}
TARGET_MINUTES, TARGET_WAIT = 30, 0.05
# What the projection and the pins are checked against.
VERSIONS = ["keras", "jax", "jaxlib", "tensorflow", "albumentations", "hydra-core", "omegaconf", "mlflow-skinny",
            "mlflow", "hydra-joblib-launcher", "numpy", "opencv-python-headless", "scipy", "pandas"]


# ---------------------------------------------------------------------------------------------- setup

def versions() -> list[str]:
    found = [f"{name} {installed(name)}" for name in VERSIONS if installed(name) != "not installed"]
    return [f"Python {platform.python_version()}", *found]


def pin_warnings() -> list[str]:
    """The installed versions that pyproject.toml's dependencies reject (the wheels of ../shared/gpu/
    fetch-wheels.sh are pinned together with them). tensorflow is not needed on JAX; mlflow may be mlflow-skinny."""
    try:
        import tomllib
        from packaging.requirements import Requirement
    except ImportError:
        return []
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():
        return []
    warnings = []
    for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        req = Requirement(line)
        names = [req.name, f"{req.name}-skinny"] if req.name == "mlflow" else [req.name]
        version = next((v for v in map(installed, names) if v != "not installed"), None)
        if version is None:
            if req.name != "tensorflow" or os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
                warnings.append(f"{req.name}: not installed (pyproject.toml asks for {req})")
        elif not req.specifier.contains(version, prereleases=True):
            warnings.append(f"{req.name} {version}: outside pyproject.toml's {req}")
    return warnings


def synthetic_data(folder: Path, n_train: int, n_eval: int) -> tuple[Path, float | None]:
    """The synthetic set's .npz, written unless an earlier invocation left it; (its path, seconds to write it
    or None when it was there)."""
    path = folder / f"cifar10-synthetic-{n_train}-{n_eval}.npz"
    if path.exists():
        return path, None
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    partial = path.with_suffix(".partial.npz")
    write_cifar_like(partial, n_train, n_eval)
    partial.replace(path)
    return path, time.perf_counter() - started


def phase_env(jobs: int, data: Path) -> dict[str, str]:
    # The sweep runs the package this benchmark belongs to (a checkout or worktree), whatever else is installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "NO_ALBUMENTATIONS_UPDATE": "1", "ABLATION_CACHE_DIR": str(data / "cache")}
    if jobs > 1:
        # Several processes on one GPU: JAX preallocates 75% of the device's memory per process and TensorFlow
        # all of it, so the second job would find none. Allocate on demand, each process capped at its share.
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / jobs:.2f}")
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env


def preflight(jobs: int, data: Path) -> str | None:
    """Import what a sweep needs, in the environment its process gets: a missing wheel fails here in seconds
    with its name, not minutes into a GPU slot. None when all is there, else the error's last line."""
    modules = ["ablation.training.run", "ablation.report.build", "ablation.sweep.jobs", "mlflow.store.tracking.sqlalchemy_store",
               *(["hydra_plugins.hydra_joblib_launcher"] if jobs > 1 else [])]
    proc = subprocess.run([sys.executable, "-c", f"import {', '.join(modules)}"], env=phase_env(jobs, data),
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


# ---------------------------------------------------------------------------------------------- one phase

def sweep_command(npz: Path, home: Path, policies: list[str], seeds: list[int], epochs: int, batch: int, jobs: int,
                  overrides: list[str]) -> list[str]:
    launcher = ["hydra/launcher=packed", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    return [sys.executable, "-m", "ablation", "-m", "dataset=npz", f"dataset.path={npz}", "model=resnet",
            f"augmentation={','.join(policies)}", "augmentation.placement=device", f"seed={','.join(map(str, seeds))}",
            f"trainer.epochs={epochs}", f"trainer.batch_size={batch}", "trainer.verbose=0",
            f"experiment_name={EXPERIMENT}", f"paths.home={home}", *launcher, *overrides]


def run_sweep(command: list[str], env: dict, cwd: Path, log: Path, label: str, timeout: float) -> dict:
    """Run the sweep command, its output to `log` (progress and error lines echoed); stopped at `timeout` s.
    Returns its start and end (time.time()), exit code and whether it was cut."""
    started = time.time()
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

        def pump():
            for line in proc.stdout:
                sink.write(line)
                text = line.strip()
                if text.startswith("[") and "/" in text.split("]")[0] or "error" in text.lower()[:12]:
                    print(f"  {label}: {text}", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        cut = False
        try:
            proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            cut = True
            os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its job processes; finished runs stay recorded
            proc.wait()
        reader.join(timeout=10)
    return {"started": started, "ended": time.time(), "rc": proc.returncode, "cut": cut}


def history(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def read_runs(home: Path) -> tuple[list[dict], tuple]:
    """The sweep's finished runs from its store (timing, steady-state images/s and input wait over epochs 2..
    or the one epoch, epoch 1: tracing and compilation, the device and backend tags), and when its parent run
    opened and closed (time.time(); None when it is not there)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return [], (None, None)
    out, parent = [], (None, None)
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        metrics, tags = run.data.metrics, run.data.tags
        if tags.get("sweep") == "parent":
            parent = (run.info.start_time / 1000, run.info.end_time and run.info.end_time / 1000)
            continue
        if run.info.status != "FINISHED" or "time/total_s" not in metrics:
            continue
        rate = history(client, run.info.run_id, "throughput/images_per_s")
        wait = history(client, run.info.run_id, "perf/input_wait_fraction")
        epoch_s = history(client, run.info.run_id, "time/epoch_s")
        steady = slice(1, None) if len(rate) > 1 else slice(None)
        train_s = [metrics["data/n_train"] / r for r in rate[steady]]
        out.append({
            "policy": tags.get("augmentation"), "seed": tags.get("seed"), "device": tags.get("device"),
            "backend": tags.get("keras_backend"), "n_train": int(metrics["data/n_train"]), "epochs": len(rate),
            "images_per_s": len(train_s) * metrics["data/n_train"] / sum(train_s),
            "input_wait": sum(w * s for w, s in zip(wait[steady], train_s)) / sum(train_s),
            "epoch1_s": epoch_s[0], "epoch_s": statistics.mean(epoch_s[steady]),
            "total_s": metrics["time/total_s"], "fit_s": metrics["time/fit_s"],
            "began": run.info.start_time / 1000 - metrics.get("time/data_load_s", 0.0),
            "ended": run.info.end_time / 1000})
    return sorted(out, key=lambda r: r["began"]), parent


def phase(label: str, jobs: int, npz: Path, tmp: Path, data: Path, args, policies: list[str], seeds: list[int],
          epochs: int, overrides: list[str], timeout: float) -> dict:
    home = tmp / label
    home.mkdir()
    log = args.out.parent / f"gpu-{label}.log"
    command = sweep_command(npz, home, policies, seeds, epochs, args.batch_size, jobs, overrides)
    print(f"\n{label}: {len(policies) * len(seeds)} runs, {jobs} job(s) at a time (log: {log})", flush=True)
    result = run_sweep(command, phase_env(jobs, data), tmp, log, label, timeout)
    runs, parent = read_runs(home)
    return {"label": label, "jobs": jobs, "planned": len(policies) * len(seeds), "runs": runs,
            "command": command, **result, **split_time(result, runs, parent, args.full_runs)}


def split_time(result: dict, runs: list[dict], parent: tuple, full_runs: int) -> dict:
    """Start-up, runs, report and exit seconds of the measured slice, and the projection to full_runs runs."""
    wall = result["ended"] - result["started"]
    if not runs:
        return {"wall": wall}
    opened, closed = parent
    began, ended = opened or min(r["began"] for r in runs), max(r["ended"] for r in runs)
    closed = closed if closed and closed >= ended else ended
    measured = {"startup": began - result["started"], "runs_s": ended - began, "report": closed - ended,
                "exit": result["ended"] - closed}
    scale = full_runs / len(runs)
    projected = {**measured, "runs_s": measured["runs_s"] * scale, "report": measured["report"] * scale}
    projected["total"] = sum(projected.values())
    return {"wall": wall, **measured, "per_run": measured["runs_s"] / len(runs), "projected": projected}


# ---------------------------------------------------------------------------------------------- report

def weighted_wait(runs: list[dict]) -> float:
    """Input wait over all the runs' measured epochs, each run weighted by its training time."""
    time_ = [r["n_train"] * max(r["epochs"] - 1, 1) / r["images_per_s"] for r in runs]
    return sum(r["input_wait"] * t for r, t in zip(runs, time_)) / sum(time_)


def summary_rows(p: dict, full_runs: int) -> list[list]:
    if "projected" not in p:
        return [[f"{p['label']}: measured", p["jobs"], 0, "—", "—", "—", "—", f"{p['wall']:.0f}", "—", "—", "—"]]
    runs, pr = p["runs"], p["projected"]
    rate = statistics.mean(r["images_per_s"] for r in runs)
    wait = weighted_wait(runs)
    cut = f" (cut at the budget: {len(runs)} of {p['planned']} finished)" if p["cut"] else ""
    return [[f"{p['label']}: measured (slice){cut}", p["jobs"], len(runs), f"{p['startup']:.1f}", f"{p['runs_s']:.1f}",
             f"{p['report']:.1f}", f"{p['exit']:.1f}", f"{p['wall']:.1f} ({p['wall'] / 60:.1f} min)", f"{3600 / p['per_run']:.0f}",
             fmt(rate), f"{wait:.1%}"],
            [f"{p['label']}: projected (full sweep)", p["jobs"], full_runs, f"{pr['startup']:.1f}",
             f"{pr['runs_s']:.1f}", f"{pr['report']:.1f}", f"{pr['exit']:.1f}", f"{pr['total']:.0f} ({pr['total'] / 60:.1f} min)",
             f"{3600 / p['per_run']:.0f}", fmt(rate), f"{wait:.1%}"]]


def per_run_table(p: dict) -> str:
    """One row per run; "outside fit" is the run's wall time (its beginning to its MLflow end) less fit: data,
    model build, the test score, the lenses, the logged model."""
    return md_table(["policy", "seed", "images/s (epochs 2..)", "input wait", "epoch 1 s (tracing, compilation)",
                     "epoch s (epochs 2..)", "fit s", "outside fit s", "run wall s"],
                    [[r["policy"], r["seed"], fmt(r["images_per_s"]), f"{r['input_wait']:.1%}", f"{r['epoch1_s']:.1f}",
                      f"{r['epoch_s']:.2f}", f"{r['fit_s']:.1f}", f"{r['ended'] - r['began'] - r['fit_s']:.1f}",
                      f"{r['ended'] - r['began']:.1f}"] for r in p["runs"]])


def verdicts(phases: list[dict], tiny: bool) -> list[str]:
    lines = []
    measured = [p for p in phases if "projected" in p]
    for p in measured:
        minutes, wait = p["projected"]["total"] / 60, weighted_wait(p["runs"])
        # The report has a fixed part too (loading Keras in the sweep's process, say): unscaled, a lower bound.
        low = (p["projected"]["total"] - p["projected"]["report"] + p["report"]) / 60
        projected = f"projected {minutes:.1f} min ({low:.1f} with the report as measured, unscaled)"
        if tiny:
            lines.append(f"- {p['label']}: {projected}, input wait {wait:.1%} (not judged: a CPU dry run at tiny sizes)")
        else:
            lines.append(f"- {p['label']}: {projected}, target <= {TARGET_MINUTES} min: "
                         f"{'PASS' if minutes <= TARGET_MINUTES else 'MISS'}; input wait {wait:.1%} (target < "
                         f"{TARGET_WAIT:.0%}): {'PASS' if wait < TARGET_WAIT else 'MISS'}")
    for p in phases:
        if p["rc"] not in (0, None) and not p["cut"]:
            lines.append(f"- {p['label']}: the sweep exited with {p['rc']} (see its log)")
    if len(measured) == 2:
        seq, packed = measured
        lines.append(f"- packed ({packed['jobs']} jobs) / sequential: {seq['per_run'] / packed['per_run']:.2f}x the runs "
                     f"per hour ({3600 / packed['per_run']:.0f} vs {3600 / seq['per_run']:.0f}); projected sweep "
                     f"{packed['projected']['total'] / 60:.1f} min packed vs {seq['projected']['total'] / 60:.1f} min "
                     f"sequential (sequential / packed = {seq['projected']['total'] / packed['projected']['total']:.2f}x)")
    return lines


def report(args, phases: list[dict], npz: Path, generated: float | None, n_train: int, n_eval: int, epochs: int,
           policies: list[str], seeds: list[int], elapsed: float) -> str:
    runs = [r for p in phases for r in p["runs"]]
    device = runs[0]["device"] if runs else "unknown (no run finished)"
    backend = runs[0]["backend"] if runs else os.environ.get("KERAS_BACKEND", "tensorflow")
    mode = "CPU dry run at tiny sizes (--tiny): the figures show the mechanics, not the GPU" if args.tiny else "GPU"
    data = (f"written in {generated:.1f} s" if generated is not None else "cached from an earlier invocation")
    header = [f"# GPU headline: a CIFAR-10-sized sweep ({mode}), {time.strftime('%Y-%m-%d %H:%M')}", "",
              "`" + " ".join(["python benchmarks/gpu.py", *sys.argv[1:]]) + "`", "",
              f"- device: {device} (run tag `device`); Keras backend {backend}",
              f"- machine: {os.cpu_count()} cores, {platform.machine()}; {', '.join(versions())}",
              *[f"- WARNING: {w}" for w in pin_warnings()],
              f"- data: synthetic, {n_train:,} training + {2 * n_eval:,} held-out images ({n_eval:,} validation, "
              f"{n_eval:,} test) of 32x32x3 uint8, 10 classes ({npz.name}, {data})",
              f"- slice: {', '.join(policies)} x seed {','.join(map(str, seeds))}, {epochs} epoch(s), model=resnet, "
              f"augmentation.placement=device, batch {args.batch_size}"
              + (f", overrides {' '.join(args.overrides)}" if args.overrides else ""),
              f"- full sweep: {len(POLICIES)} policies ({', '.join(POLICIES)}) x {SEEDS} seeds x {epochs} epoch(s) = "
              f"{args.full_runs} runs",
              f"- {elapsed:.0f} s in all"]
    table = md_table(["phase", "jobs", "runs", "start-up s", "runs s", "report s", "exit s", "total s", "runs/hour",
                      "images/s per run (mean)", "input wait"],
                     [row for p in phases for row in summary_rows(p, args.full_runs)])
    notes = ("start-up: the command's start to the sweep's parent run opening; runs: from then to the last run's "
             "end; report: from then to the parent run closing; exit: from then to the command's exit. Projected: "
             f"start-up and exit once, the runs and the report scaled by {args.full_runs} / slice runs. images/s: the training "
             "part of epochs 2.. (of the only epoch when there is one; throughput/images_per_s); input wait: the share of that time the fit loop waited "
             "for its next batch (perf/input_wait_fraction), weighted by training time.")
    sections = ["\n".join(header), "## Measured and projected", table, notes, "\n".join(verdicts(phases, args.tiny))]
    for p in phases:
        if p["runs"]:
            sections += [f"## Runs: {p['label']} ({p['jobs']} job(s) at a time)", per_run_table(p)]
    return "\n\n".join(sections) + "\n"


# ---------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: 512 + 128 images, 1 epoch, 2 policies")
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs at a time through hydra/launcher=packed (default 1; with --compare-packing 3)")
    parser.add_argument("--compare-packing", action="store_true",
                        help="run the slice sequentially and with --jobs at once, and print the ratio")
    parser.add_argument("--slice", default=None, help=f"the slice's policies (default {','.join(SLICE)})")
    parser.add_argument("--seeds", default="0", help="the slice's seeds (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default {EPOCHS} (--tiny: 1)")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds for all phases together; a phase still running then is stopped and its "
                             "finished runs reported (default 480)")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("overrides", nargs="*", help="more overrides for every run, e.g. lenses.corruptions=[]")
    args = parser.parse_args(argv)
    tiny = TINY if args.tiny else {}
    n_train, n_eval = tiny.get("n_train", N_TRAIN), tiny.get("n_eval", N_EVAL)
    epochs = args.epochs or tiny.get("epochs", EPOCHS)
    policies = args.slice.split(",") if args.slice else tiny.get("slice", SLICE)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = [*tiny.get("overrides", []), *args.overrides]
    args.full_runs = len(POLICIES) * SEEDS
    jobs = args.jobs or (3 if args.compare_packing else 1)
    plan = [("sequential", 1), (f"packed-{jobs}", jobs)] if args.compare_packing else [
        ("sequential" if jobs == 1 else f"packed-{jobs}", jobs)]
    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    print(f"GPU headline benchmark{' (tiny CPU dry run)' if args.tiny else ''}; "
          f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '(unset: tensorflow)')}", flush=True)
    print("versions: " + ", ".join(versions()), flush=True)
    for warning in pin_warnings():
        print(f"WARNING: {warning}", flush=True)
    npz, generated = synthetic_data(args.data_dir, n_train, n_eval)
    print(f"data: {npz} " + (f"written in {generated:.1f} s" if generated is not None else "(cached)"), flush=True)

    error = preflight(max(n for _, n in plan), args.data_dir)
    if error:
        print(f"error: the sweep cannot start here: {error}", file=sys.stderr)
        return 2
    phases = []
    with tempfile.TemporaryDirectory(prefix="ablation-bench-gpu-") as tmp:
        for label, n_jobs in plan:
            left = args.budget - (time.perf_counter() - started)
            if left < 30:
                print(f"\n{label}: skipped, {left:.0f} s of the budget left", flush=True)
                continue
            phases.append(phase(label, n_jobs, npz, Path(tmp), args.data_dir, args, policies, seeds, epochs,
                                overrides, left))
            # Each phase's figures as soon as it ends, on stdout and in the report: a slot that ends early
            # keeps what was measured.
            print("\n".join("| " + " | ".join(map(str, row)) + " |" for row in summary_rows(phases[-1], args.full_runs)),
                  flush=True)
            args.out.write_text(report(args, phases, npz, generated, n_train, n_eval, epochs, policies, seeds,
                                       time.perf_counter() - started))
    text = report(args, phases, npz, generated, n_train, n_eval, epochs, policies, seeds,
                  time.perf_counter() - started)
    args.out.write_text(text)
    print("\n" + text + f"\nwritten to {args.out}", flush=True)
    return 0 if phases and all(p["runs"] and (p["rc"] == 0 or p["cut"]) for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
