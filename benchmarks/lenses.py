"""What the report's lenses cost: the same sweep timed side by side with them off and on.

The lenses: per-class accuracy and the confusion matrix (lenses.per_class), the corruption suite (lenses.corruptions,
9 corruptions x 5 severities), and affinity/diversity computed when the report is built (lenses.affinity). The
sweep is the default one's settings (experiment=digits_ablation: small_cnn on digits, early stopping, at most 60
epochs) over a few of its policies and seeds; each variant runs as a whole command, sweep and report, in a store
of its own, alternating off/on. Target: the lenses add at most 15% to the sweep's wall time.

A machine whose speed drifts between minutes moves the two sweeps' times apart by more than the lenses cost, so
the lenses are also timed inside the very runs they are part of: the "on" runs' time/per_class_s and
time/robust_s, and affinity/diversity computed afresh over the "off" runs (which logged their models but no
measures), against the runs' own time/total_s: a share that machine drift cannot move.

    python benchmarks/lenses.py [--policies none,shift,hflip] [--seeds 2] [--repeats 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench" / "lenses.md"
OFF = ["lenses.per_class=false", "lenses.affinity=false", "lenses.corruptions=[]"]
TARGET = 1.15


def sweep(home: Path, policies: str, seeds: int, lenses: bool) -> float:
    command = [sys.executable, "-m", "ablation", "-m", "experiment=digits_ablation",
               f"augmentation={policies}", f"seed=range({seeds})",
               f"paths.home={home}", *([] if lenses else OFF)]
    started = time.perf_counter()
    subprocess.run(command, cwd=home, check=True, capture_output=True, text=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - started


def inside(on_home: Path, off_home: Path) -> dict[str, float]:
    """Seconds the lenses took inside the runs, and the runs' own total time."""
    import mlflow

    from ablation.cli.compose import compose_app
    from ablation.lenses import affinity
    from ablation.report import build as report

    mlflow.set_tracking_uri(f"sqlite:///{on_home / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["digits_ablation"])
    runs = runs[runs["tags.sweep"].ne("parent")] if "tags.sweep" in runs else runs
    cfg = compose_app("report", ["experiment_name=digits_ablation", f"paths.home={off_home}"])
    finished, _, _ = report.runs_of(cfg)
    started = time.perf_counter()
    affinity.of_runs(cfg, finished)
    measured = {"per_class": float(runs["metrics.time/per_class_s"].sum()),
                "corruptions": float(runs["metrics.time/robust_s"].sum()),
                "affinity": time.perf_counter() - started}
    return {**measured, "lenses": sum(measured.values()), "runs": float(runs["metrics.time/total_s"].sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="none,shift,hflip")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="ablation-lenses-") as tmp:
        for repeat in range(args.repeats):
            for variant in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
                home = Path(tmp) / f"{variant}{repeat}"
                home.mkdir()
                seconds = sweep(home, args.policies, args.seeds, variant == "on")
                times[variant].append(seconds)
                print(f"{variant}: {seconds:.1f} s", flush=True)
        share = inside(Path(tmp) / "on0", Path(tmp) / "off0")
    off, on = min(times["off"]), min(times["on"])
    runs = len(args.policies.split(",")) * args.seeds
    verdict = "PASS" if on / off <= TARGET else "MISS"
    table = "\n".join([
        f"### Lenses: the same sweep with and without them ({runs} runs: {args.policies} x {args.seeds} seeds, "
        f"experiment=digits_ablation settings; fastest of {args.repeats} each, sweep and report)",
        "", "| lenses | wall s | per run s |", "|---|---:|---:|",
        f"| off ({' '.join(OFF)}) | {off:.1f} | {off / runs:.1f} |",
        f"| on (defaults) | {on:.1f} | {on / runs:.1f} |", "",
        f"on / off = {on / off:.3f} (target <= {TARGET:.2f}): {verdict}", "",
        "Timed inside the runs (s, summed over the runs): " + ", ".join(f"{k} {v:.1f}" for k, v in share.items()),
        "", f"lenses / runs = {share['lenses'] / share['runs']:.3f} "
            f"(target <= {TARGET - 1:.2f}): {'PASS' if share['lenses'] / share['runs'] <= TARGET - 1 else 'MISS'}"])
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
