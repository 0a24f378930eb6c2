"""Per-step overhead of a run on CPU: where a default run's fit time goes, measured as ratios side by side.

Every variant is one whole `python -m ablation` run (digits, small_cnn, the default trainer, 12 epochs, the lenses
off, no model logged) in a fresh process, alternating variants so a machine whose speed drifts moves them alike;
its `time/fit_s` (MLflow) is the figure. Against them, the plain Keras fit a user would write by hand: the same
model, data and epochs, `model.fit` on arrays with `validation_data` (no clean-train evaluation, no callbacks),
also in a fresh process. Variants:

    default            the current defaults (one-pass epoch evaluation, eval_batch_size=256)
    keras_evaluation   fit's validation loop plus an `evaluate` of the clean subset (trainer.epoch_evaluation=keras)
    earlier_default    that, at the training batch size too (eval_batch_size=null): the defaults before this work
    steps_per_exec_16  16 training steps per compiled call (trainer.steps_per_execution=16: a whole epoch)
    jit_compile        XLA on CPU (trainer.jit_compile=true)
    jax                the JAX backend (KERAS_BACKEND=jax)

With --sweep, the same small sweep (experiment=digits_ablation as `make sweep` runs it, lenses included: early
stopping, at most 60 epochs; fewer policies and seeds) is timed whole, each in a store of its own, under the
earlier settings, the current defaults without keeping the compiled model between runs (the lever of not
retracing per run), and the current defaults; with --packing also packed (hydra/launcher=packed: as many jobs at
once as packing.jobs() finds the machine takes), as runs per hour against the same sweep one job at a time.
--quick shrinks everything to a smoke test of the sections (1 repeat, 2 epochs, a 2-run sweep).

    python benchmarks/overhead.py [--repeats 2] [--sweep] [--packing] [--quick] [--out FILE]   (make bench OVERHEAD=1)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench" / "overhead.md"
EPOCHS = 12
RUN = ["trainer.verbose=0", "lenses.corruptions=[]", "lenses.per_class=false", "lenses.affinity=false",
       "tracking.log_model=false", "sweep.rerun=true"]
# The settings before the overhead work.
OLD = ["trainer.eval_batch_size=null", "trainer.epoch_evaluation=keras", "trainer.keep_compiled=false"]
SWEEPS = {"earlier settings": OLD, "current, compiled afresh per run": ["trainer.keep_compiled=false"],
          "current defaults": [], "current defaults, packed": ["hydra/launcher=packed"]}
VARIANTS = {"default": ([], {}), "keras_evaluation": (["trainer.epoch_evaluation=keras"], {}),
            "earlier_default": (OLD, {}), "steps_per_exec_16": (["trainer.steps_per_execution=16"], {}),
            "jit_compile": (["trainer.jit_compile=true"], {}), "jax": ([], {"KERAS_BACKEND": "jax"})}


def env(extra: dict | None = None) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(extra or {})}


def fit_time(home: Path, overrides: list[str], extra_env: dict, epochs: int = EPOCHS) -> float:
    """One run's time/fit_s, read back from its store."""
    from mlflow.tracking import MlflowClient

    subprocess.run([sys.executable, "-m", "ablation", f"trainer.epochs={epochs}", *RUN, *overrides,
                    f"paths.home={home}", "experiment_name=overhead"], cwd=home, check=True, capture_output=True,
                   env=env(extra_env))
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("overhead")
    [latest] = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return latest.data.metrics["time/fit_s"]


def plain_keras(epochs: int = EPOCHS) -> float:
    """The hand-written fit: same model, data split and epochs, arrays in, validation_data, defaults."""
    code = f"""
import time, keras
from hydra import compose, initialize_config_dir
from ablation import datasets
from ablation.training import models
from ablation.core.paths import CONF
with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config")
splits = datasets.load(cfg.dataset)
model = models.build(cfg.model, splits.input_shape, splits.num_classes)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
x, vx = splits.train.x.astype("float32") / 255, splits.val.x.astype("float32") / 255
started = time.perf_counter()
model.fit(x, splits.train.y, batch_size=32, epochs={epochs}, validation_data=(vx, splits.val.y), verbose=0)
print(time.perf_counter() - started)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True, env=env())
    return float(out.stdout.strip().splitlines()[-1])


def sweep_time(home: Path, overrides: list[str], policies: str, seeds: int, extra: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ablation", "-m", "experiment=digits_ablation", f"augmentation={policies}",
                    f"seed=range({seeds})", "tracking.log_model=false", *extra, *overrides, f"paths.home={home}"],
                   cwd=home, check=True, capture_output=True, env=env())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sweep", action="store_true", help="also time a small default sweep, old vs new settings")
    parser.add_argument("--packing", action="store_true", help="with --sweep: also the sweep packed")
    parser.add_argument("--quick", action="store_true", help="a smoke test of every section (timings meaningless)")
    parser.add_argument("--policies", default="none,shift")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    epochs, variants, extra = EPOCHS, VARIANTS, []
    if args.quick:
        args.repeats, args.policies, args.seeds, epochs = 1, "none", 2, 2
        variants = {k: VARIANTS[k] for k in ("default", "earlier_default")}
        extra = ["trainer.epochs=2", "lenses.corruptions=[]", "lenses.affinity=false"]
    sweeps_wanted = {k: v for k, v in SWEEPS.items() if args.packing or "packed" not in k} if args.sweep else {}
    times: dict[str, list[float]] = {name: [] for name in [*variants, "plain Keras"]}
    with tempfile.TemporaryDirectory(prefix="ablation-overhead-") as tmp:
        for _ in range(args.repeats):
            for name, (overrides, extra_env) in variants.items():
                times[name].append(fit_time(Path(tmp), overrides, extra_env, epochs))
                print(f"  {name}: fit {times[name][-1]:.2f} s", flush=True)
            times["plain Keras"].append(plain_keras(epochs))
            print(f"  plain Keras: fit {times['plain Keras'][-1]:.2f} s", flush=True)
        sweeps = {}
        for label, overrides in sweeps_wanted.items():
            home = Path(tmp) / label.replace(" ", "_").replace(",", "")
            home.mkdir()
            sweeps[label] = sweep_time(home, overrides, args.policies, args.seeds, extra)
            print(f"  sweep, {label}: {sweeps[label]:.1f} s", flush=True)
    text = render(times, sweeps, args, epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("\n" + text + f"\nwritten to {args.out}")


def render(times: dict[str, list[float]], sweeps: dict[str, float], args, epochs: int) -> str:
    median = {name: statistics.median(values) for name, values in times.items()}
    lines = [f"# Per-run overhead on CPU ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)", "",
             f"One default digits run, {epochs} epochs, `time/fit_s` (median of {args.repeats}), each in a fresh "
             "process:", "", "| variant | fit (s) | / default | / plain Keras |", "|---|---:|---:|---:|"]
    for name, value in median.items():
        lines.append(f"| {name} | {value:.2f} | {value / median['default']:.2f} | {value / median['plain Keras']:.2f} |")
    if sweeps:
        old = sweeps["earlier settings"]
        runs = len(args.policies.split(",")) * args.seeds
        lines += ["", f"The same sweep (experiment=digits_ablation, augmentation={args.policies}, {args.seeds} seeds: "
                      f"{runs} runs, lenses on as in `make sweep`), whole, each in a store of its own:", "",
                  "| settings | wall (s) | runs per hour | speed-up over the earlier settings |", "|---|---:|---:|---:|"]
        for label, wall in sweeps.items():
            lines.append(f"| {label} | {wall:.1f} | {runs * 3600 / wall:.0f} | {old / wall:.2f}x |")
        if "current defaults, packed" in sweeps:
            from ablation.sweep import packing

            lines += ["", f"packed ({packing.jobs()} jobs at once) against one job at a time: "
                          f"{sweeps['current defaults'] / sweeps['current defaults, packed']:.2f}x the runs per hour"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
