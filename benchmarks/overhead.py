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

With --sweep, the same small sweep (experiment=digits_ablation: early stopping, at most 60 epochs; a few
policies and seeds) is timed whole under the earlier settings and the current ones.

    python benchmarks/overhead.py [--repeats 2] [--sweep] [--out FILE]     (make bench OVERHEAD=1)
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
RUN = ["trainer.verbose=0", "eval.corruptions=[]", "eval.per_class=false", "eval.affinity=false",
       "tracking.log_model=false", "force=true"]
OLD = ["trainer.eval_batch_size=null", "trainer.epoch_evaluation=keras"]  # the settings before the overhead work
VARIANTS = {"default": ([], {}), "keras_evaluation": (["trainer.epoch_evaluation=keras"], {}),
            "earlier_default": (OLD, {}), "steps_per_exec_16": (["trainer.steps_per_execution=16"], {}),
            "jit_compile": (["trainer.jit_compile=true"], {}), "jax": ([], {"KERAS_BACKEND": "jax"})}


def env(extra: dict | None = None) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(extra or {})}


def fit_time(home: Path, overrides: list[str], extra_env: dict) -> float:
    """One run's time/fit_s, read back from its store."""
    from mlflow.tracking import MlflowClient

    subprocess.run([sys.executable, "-m", "ablation", f"trainer.epochs={EPOCHS}", *RUN, *overrides,
                    f"paths.home={home}", "experiment_name=overhead"], cwd=home, check=True, capture_output=True,
                   env=env(extra_env))
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("overhead")
    [latest] = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return latest.data.metrics["time/fit_s"]


def plain_keras() -> float:
    """The hand-written fit: same model, data split and epochs, arrays in, validation_data, defaults."""
    code = f"""
import time, keras
from hydra import compose, initialize_config_dir
from ablation import datasets, models
from ablation.paths import CONF
with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config")
splits = datasets.load(cfg.dataset)
model = models.build(cfg.model, splits.input_shape, splits.num_classes)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
x, vx = splits.train.x.astype("float32") / 255, splits.val.x.astype("float32") / 255
started = time.perf_counter()
model.fit(x, splits.train.y, batch_size=32, epochs={EPOCHS}, validation_data=(vx, splits.val.y), verbose=0)
print(time.perf_counter() - started)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True, env=env())
    return float(out.stdout.strip().splitlines()[-1])


def sweep_time(home: Path, overrides: list[str], policies: str, seeds: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ablation", "-m", "experiment=digits_ablation", f"augmentation={policies}",
                    f"seed=range({seeds})", "eval.corruptions=[]", "eval.affinity=false", "tracking.log_model=false",
                    *overrides, f"paths.home={home}"], cwd=home, check=True, capture_output=True, env=env())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sweep", action="store_true", help="also time a small default sweep, old vs new settings")
    parser.add_argument("--policies", default="none,shift")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in [*VARIANTS, "plain Keras"]}
    with tempfile.TemporaryDirectory(prefix="ablation-overhead-") as tmp:
        for _ in range(args.repeats):
            for name, (overrides, extra) in VARIANTS.items():
                times[name].append(fit_time(Path(tmp), overrides, extra))
                print(f"  {name}: fit {times[name][-1]:.2f} s", flush=True)
            times["plain Keras"].append(plain_keras())
            print(f"  plain Keras: fit {times['plain Keras'][-1]:.2f} s", flush=True)
        sweeps = {}
        if args.sweep:
            for label, overrides in (("earlier settings", OLD), ("current defaults", [])):
                home = Path(tmp) / label.replace(" ", "_")
                home.mkdir()
                sweeps[label] = sweep_time(home, overrides, args.policies, args.seeds)
                print(f"  sweep, {label}: {sweeps[label]:.1f} s", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    lines = [f"# Per-run overhead on CPU ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)", "",
             f"One default digits run, {EPOCHS} epochs, `time/fit_s` (median of {args.repeats}), each in a fresh "
             "process:", "", "| variant | fit (s) | / default | / plain Keras |", "|---|---:|---:|---:|"]
    for name, value in median.items():
        lines.append(f"| {name} | {value:.2f} | {value / median['default']:.2f} | {value / median['plain Keras']:.2f} |")
    if sweeps:
        old, new = sweeps["earlier settings"], sweeps["current defaults"]
        lines += ["", f"The same sweep (experiment=digits_ablation, augmentation={args.policies}, {args.seeds} seeds, "
                      "lenses off), whole, each in a store of its own:", "", "| settings | wall (s) |", "|---|---:|",
                  f"| earlier ({', '.join(OLD)}) | {old:.1f} |", f"| current defaults | {new:.1f} |",
                  "", f"speed-up: {old / new:.2f}x"]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("\n" + text + f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
