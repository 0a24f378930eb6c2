"""The measurements behind the report's decision rule (docs/decision.md), from real sweeps in MLflow:

  python scripts/decision_study.py estimators digits_library shapes_ablation
      every gap estimator's signal to noise over the policies of each experiment (paired by seed)
  python scripts/decision_study.py fit digits_library --out tests/data/noise_digits.json
      the noise model the calibration simulations draw from (ablation/report/simulate.py)
  python scripts/decision_study.py simulate tests/data/noise_digits.json
      each verdict's error rate in every scenario of ablation/report/simulate.py (1,000 sweeps of 20 policies at 3, 5
      and 10 seeds), and the power for a shift-sized effect, by seeds and correction
  python scripts/decision_study.py seeds digits_ablation
      the verdicts the first 3, 5 and all seeds of an experiment give, under bh and holm
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

from ablation.cli.compose import compose_from_argv
from ablation.core import curves, stats
from ablation.core.names import BASELINE
from ablation.report import build as report
from ablation.report import decide, simulate, summary


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
            d = _differences(runs, f"gap_{name}") if name != "paired_auc" else _paired(runs)
            stats_ = stats.paired(d)
            t = np.abs(stats_["mean"] / (stats_["sd"] / np.sqrt(stats_["n"])))
            decided = int(np.sum(stats.adjust(stats_["p"], "bh") < 0.05))
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
    return (wide.drop(index=BASELINE) - wide.loc[BASELINE]).to_numpy(float)


def _paired(runs: pd.DataFrame) -> np.ndarray:
    """(policies, seeds) differences by paired_auc: each seed's runs compared over the epochs both trained."""
    seeds = sorted(runs["seed"].unique())
    base = runs[runs["augmentation"] == BASELINE]
    return np.array([summary._paired_curves(runs[runs["augmentation"] == a], base, seeds)
                     for a in sorted(set(runs["augmentation"]) - {BASELINE})])


def fit(experiment: str, out: Path, overrides: list[str]) -> None:
    model = simulate.fit(per_run(experiment, overrides), source=f"{experiment} (gap: {summary.DEFAULTS['gap']} estimator)")
    model.save(out)
    print(f"noise model of {experiment}: sd gap {model.sd_gap:.4f}, sd score {model.sd_score:.4f}, "
          f"correlation {model.correlation:+.2f}, {len(model.scales)} policies' scales -> {out}")


SCENARIOS = {
    "no effect": lambda m: simulate.Scenario(),
    "every policy lowers the gap, none changes the score": lambda m: simulate.Scenario(effect_gap=-3 * m.sd_gap),
    "no effect, 10% bad seeds": lambda m: simulate.Scenario(bad_seeds=0.1),
    "no effect, accuracy in steps of one test image": lambda m: simulate.Scenario(step=100 / 360),
    "no effect, 20% seeds missing, 10% of policies with a failed run":
        lambda m: simulate.Scenario(missing=0.2, failed=0.1),
    "5 shift-like, 5 cost 1 point, 10 no effect": lambda m: simulate.Scenario(
        effect_gap=(-0.07,) * 5 + (0.0,) * 15, effect_score=(2.1,) * 5 + (-1.0,) * 5 + (0.0,) * 10),
}


def simulate_all(path: Path, effect_from: str | None, overrides: list[str], n_sweeps: int = 1000) -> None:
    model = simulate.NoiseModel.load(path)
    print(f"{n_sweeps} simulated sweeps of 20 policies per row (noise model {path.name}: {model.source}); the share "
          "of sweeps with at least one wrong verdict of each kind (simulate.wrong).\n")
    print("| scenario | seeds | correction | any wrong effect | wrong among effects (FDR) | false harm | false helps "
          "| helps | undecided |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, make in SCENARIOS.items():
        for seeds in (3, 5, 10):
            for correction in ("bh", "holm"):
                r = simulate.rates(model, n_sweeps, 20, seeds, make(model), correction, seed=seeds)
                print(f"| {name} | {seeds} | {correction} | {r['sweeps_effect']:.3f} | "
                      f"{r['false_discovery_rate']:.3f} | {r['sweeps_harm']:.3f} | "
                      f"{r['sweeps_helps']:.3f} | {r[decide.HELPS]:.2f} | {r[decide.UNDECIDED]:.2f} |")
    print("\nPower: one policy like shift on digits (delta gap -0.070, +2.1 points) among 20 (the other 19 without "
          "effect); the share of sweeps that give it `helps`.\n")
    print("| seeds | bh | holm | none |")
    print("|---|---|---|---|")
    scenario = simulate.Scenario(effect_gap=(-0.070,) + (0.0,) * 19, effect_score=(2.1,) + (0.0,) * 19)
    for seeds in (3, 5, 8, 10):
        shares = [(simulate.decided(model, n_sweeps, 20, seeds, scenario, c, seed=seeds)[:, 0] == decide.HELPS).mean()
                  for c in decide.CORRECTIONS]
        print(f"| {seeds} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")


def seeds(experiment: str, overrides: list[str]) -> None:
    runs = per_run(experiment, overrides)
    counts = [n for n in (3, 5) if n < runs["seed"].nunique()] + [runs["seed"].nunique()]
    columns = [(n, c) for n in counts for c in (("bh",) if n != counts[-1] else ("bh", "holm"))]
    verdicts = {}
    for n, correction in columns:
        kept = runs[runs["seed"].isin(sorted(runs["seed"].unique())[:n])]
        table = summary.summary(kept, summary.options({"correction": correction}))
        verdicts[(n, correction)] = dict(zip(table["augmentation"], table["verdict"]))
    print("| policy | " + " | ".join(f"{n} seeds ({c})" for n, c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for policy in verdicts[columns[-1]]:
        if policy != BASELINE:
            print(f"| {policy} | " + " | ".join(verdicts[col].get(policy, "") for col in columns) + " |")


def flags(experiments: list[str], overrides: list[str]) -> None:
    print("| experiment | policies | unfinished | underfitting | runs unfinished | epochs trained (mean) |")
    print("|---|---|---|---|---|---|")
    for experiment in experiments:
        runs = per_run(experiment, overrides)
        table = summary.summary(runs, summary.options())
        policies = table[table["augmentation"] != BASELINE]
        late = ", ".join(policies.loc[policies["unfinished"], "augmentation"]) or "none"
        low = ", ".join(policies.loc[policies["underfits"], "augmentation"]) or "none"
        print(f"| {experiment} | {len(policies)} | {late} | {low} | {runs['unfinished'].mean():.0%} "
              f"| {runs['epochs_trained'].mean():.1f} |")


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if "=" in a]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("estimators", "fit", "simulate", "flags", "seeds"))
    parser.add_argument("names", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("tests/data/noise_digits.json"))
    parser.add_argument("--effect-from")
    args = parser.parse_args([a for a in argv if "=" not in a])
    if args.what == "estimators":
        estimators(args.names, overrides)
    elif args.what == "fit":
        fit(args.names[0], args.out, overrides)
    elif args.what == "seeds":
        seeds(args.names[0], overrides)
    elif args.what == "simulate":
        simulate_all(Path(args.names[0]), args.effect_from, overrides)
    else:
        flags(args.names, overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
