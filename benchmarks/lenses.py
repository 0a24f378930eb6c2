"""What the report's lenses cost: the same sweep timed side by side with them off and on.

The lenses: per-class accuracy and the confusion matrix (eval.per_class), the corruption suite (eval.corruptions,
9 corruptions x 5 severities), and affinity/diversity computed when the report is built (eval.affinity). The
sweep is the default one's settings (experiment=digits_ablation: small_cnn on digits, early stopping, at most 60
epochs) over a few of its policies and seeds; each variant runs as a whole command, sweep and report, in a store
of its own, alternating off/on so that both see the same machine. Target: the lenses add at most 15% to the
sweep's wall time.

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
OFF = ["eval.per_class=false", "eval.affinity=false", "eval.corruptions=[]"]
TARGET = 1.15


def sweep(home: Path, policies: str, seeds: int, lenses: bool) -> float:
    command = [sys.executable, "-m", "ablation", "-m", "experiment=digits_ablation",
               f"augmentation={policies}", f"seed=range({seeds})",
               f"paths.home={home}", *([] if lenses else OFF)]
    started = time.perf_counter()
    subprocess.run(command, cwd=home, check=True, capture_output=True, text=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - started


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
    off, on = min(times["off"]), min(times["on"])
    runs = len(args.policies.split(",")) * args.seeds
    verdict = "PASS" if on / off <= TARGET else "MISS"
    table = "\n".join([
        f"### Lenses: the same sweep with and without them ({runs} runs: {args.policies} x {args.seeds} seeds, "
        f"experiment=digits_ablation settings; fastest of {args.repeats} each, sweep and report)",
        "", "| lenses | wall s | per run s |", "|---|---:|---:|",
        f"| off ({' '.join(OFF)}) | {off:.1f} | {off / runs:.1f} |",
        f"| on (defaults) | {on:.1f} | {on / runs:.1f} |", "",
        f"on / off = {on / off:.3f} (target <= {TARGET:.2f}): {verdict}"])
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
