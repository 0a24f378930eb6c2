"""The measurements behind the report's decision rule (docs/decision.md), from real sweeps in MLflow:

  python scripts/decision_study.py estimators digits_library shapes_ablation
      every gap estimator's signal to noise over the policies of each experiment (paired by seed)
  python scripts/decision_study.py fit digits_library --out tests/data/noise_digits.json
      the noise model the calibration simulations draw from (ablation/simulate.py)
  python scripts/decision_study.py simulate tests/data/noise_digits.json --effect-from digits_library:shift
      false verdicts with no true effect (1,000 sweeps of 20 policies at 3 and 5 seeds) and the power for the
      effect one policy shows in a real sweep, by seeds and correction
  python scripts/decision_study.py flags digits_library shapes_ablation
      how often policies are flagged unfinished or underfitting

Each prints Markdown. tracking.uri=... after the arguments reads another store."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablation import curves, decide, report, simulate, summary
from ablation.cli import compose_from_argv


def per_run(experiment: str, overrides: list[str], estimator: str = summary.DEFAULTS["gap"]) -> pd.DataFrame:
    cfg = compose_from_argv([f"experiment_name={experiment}", *overrides])
    finished, _, _ = report.runs_of(cfg)
    if finished.empty:
        raise SystemExit(f"error: experiment_name: no finished runs in MLflow experiment {experiment!r}")
    return summary.per_run(finished, report.histories(cfg, finished), estimator)


def estimators(experiments: list[str], overrides: list[str]) -> None:
    print("| experiment | estimator | policies | signal / noise | median abs(t) | decided (BH 0.05) | pooled sd of d |")
    print("|---|---|---|---|---|---|---|")
    for experiment in experiments:
        runs = per_run(experiment, overrides)
        results = []
        for name in curves.ESTIMATORS:
            d = _differences(runs, f"gap_{name}")
            stats_ = decide.paired(d)
            t = np.abs(stats_["mean"] / (stats_["sd"] / np.sqrt(stats_["n"])))
            decided = int(np.sum(decide.adjust(stats_["p"], "bh") < 0.05))
            pooled = np.sqrt(np.nanmean(stats_["sd"] ** 2))
            # How far apart the policies' mean effects lie, in units of one seed's noise: the estimator that
            # tells policies apart with the fewest seeds has the highest.
            signal = np.nanstd(stats_["mean"], ddof=1) / pooled
            results.append((signal, name, len(d), np.nanmedian(t), decided, pooled))
        for signal, name, k, median, decided, sd in sorted(results, reverse=True):
            print(f"| {experiment} | {name} | {k} | {signal:.2f} | {median:.2f} | {decided} | {sd:.4f} |")


def _differences(runs: pd.DataFrame, column: str) -> np.ndarray:
    """(policies, seeds) paired differences with none of one column."""
    wide = runs.pivot_table(index="augmentation", columns="seed", values=column)
    return (wide.drop(index=summary.BASELINE) - wide.loc[summary.BASELINE]).to_numpy(float)


def fit(experiment: str, out: Path, overrides: list[str]) -> None:
    model = simulate.fit(per_run(experiment, overrides), source=f"{experiment} (gap: {summary.DEFAULTS['gap']} estimator)")
    model.save(out)
    print(f"noise model of {experiment}: sd gap {model.sd_gap:.4f}, sd score {model.sd_score:.4f}, "
          f"correlation {model.correlation:+.2f}, {len(model.scales)} policies' scales -> {out}")


def simulate_all(path: Path, effect_from: str | None, overrides: list[str], n_sweeps: int = 1000) -> None:
    model = simulate.NoiseModel.load(path)
    print(f"No true effect: {n_sweeps} simulated sweeps of 20 policies (noise model {path.name}: {model.source}).\n")
    print("| seeds | correction | policies with a verdict (target <= 0.05) | sweeps with any verdict |")
    print("|---|---|---|---|")
    for seeds in (3, 5):
        for correction in decide.CORRECTIONS:
            r = simulate.false_verdicts(model, n_sweeps, 20, seeds, correction, seed=seeds)
            print(f"| {seeds} | {correction} | {r['per_policy']:.4f} | {r['per_sweep']:.3f} |")
    if not effect_from:
        return
    experiment, policy = effect_from.split(":")
    runs = per_run(experiment, overrides)
    row = {c: _differences(runs, c)[sorted(set(runs["augmentation"]) - {summary.BASELINE}).index(policy)]
           for c in ("gap", "test_score")}
    gap, score = float(np.nanmean(row["gap"])), float(np.nanmean(row["test_score"]))
    print(f"\nPower: one policy with the effect {policy} shows on {experiment} (delta gap {gap:+.3f}, delta "
          f"accuracy {score:+.3f}) among 20 (the other 19 without effect), {n_sweeps} sweeps; the share given "
          f"`helps`.\n")
    print("| seeds | bh | holm | none |")
    print("|---|---|---|---|")
    for seeds in (3, 5, 8, 10):
        shares = [simulate.power(model, gap, score, n_sweeps, 20, seeds, c, decide.HELPS, seed=seeds)
                  for c in decide.CORRECTIONS]
        print(f"| {seeds} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    # A sweep like the real one: every policy has the effect measured for it. Benjamini-Hochberg's threshold
    # loosens as more policies are decided; Holm's does not.
    policies = sorted(set(runs["augmentation"]) - {summary.BASELINE})
    gaps = np.nanmean(_differences(runs, "gap"), axis=1)
    scores = np.nanmean(_differences(runs, "test_score"), axis=1)
    at = policies.index(policy)
    print(f"\nPower in a sweep like {experiment}: its {len(policies)} policies, each with the effect measured for "
          f"it; the share of sweeps that give {policy} `helps`.\n")
    print("| seeds | bh | holm | none |")
    print("|---|---|---|---|")
    for seeds in (3, 5, 8, 10):
        shares = []
        for correction in decide.CORRECTIONS:
            d_gap, d_score = simulate.sweeps(model, n_sweeps, len(policies), seeds, gaps, scores, seed=seeds)
            v = simulate.verdicts(d_gap, d_score, correction)
            shares.append((v[:, at] == decide.HELPS).mean())
        print(f"| {seeds} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")


def flags(experiments: list[str], overrides: list[str]) -> None:
    print("| experiment | policies | unfinished | underfitting | runs unfinished | epochs trained (mean) |")
    print("|---|---|---|---|---|---|")
    for experiment in experiments:
        runs = per_run(experiment, overrides)
        table = summary.summary(runs, summary.options())
        policies = table[table["augmentation"] != summary.BASELINE]
        late = ", ".join(policies.loc[policies["unfinished"], "augmentation"]) or "none"
        low = ", ".join(policies.loc[policies["underfits"], "augmentation"]) or "none"
        print(f"| {experiment} | {len(policies)} | {late} | {low} | {runs['unfinished'].mean():.0%} "
              f"| {runs['epochs_trained'].mean():.1f} |")


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if "=" in a]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("estimators", "fit", "simulate", "flags"))
    parser.add_argument("names", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("tests/data/noise_digits.json"))
    parser.add_argument("--effect-from")
    args = parser.parse_args([a for a in argv if "=" not in a])
    if args.what == "estimators":
        estimators(args.names, overrides)
    elif args.what == "fit":
        fit(args.names[0], args.out, overrides)
    elif args.what == "simulate":
        simulate_all(Path(args.names[0]), args.effect_from, overrides)
    else:
        flags(args.names, overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
