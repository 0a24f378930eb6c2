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
  python scripts/decision_study.py sequential-simulate tests/data/noise_digits.json
      the sequential seed design (ablation/report/sequential.py) against the fixed 3, 5 and 10-seed designs in every
      scenario: error rates, power and expected runs; and the schedules and spending functions compared
  python scripts/decision_study.py sequential digits_ablation
      the sequential design replayed on an experiment's recorded runs (its seeds in order): per policy the look it
      stops at, its seeds and verdict against the all-seed verdict, and the runs and run time it would have used

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
from ablation.report import decide, sequential, simulate, summary


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


SEQUENTIAL_SCENARIOS = {
    **SCENARIOS,
    "one shift-like among 19 without effect": lambda m: simulate.Scenario(
        effect_gap=(-0.070,) + (0.0,) * 19, effect_score=(2.1,) + (0.0,) * 19),
}
SIX = simulate.Scenario(effect_gap=(-0.07,) * 3 + (0.0,) * 3, effect_score=(2.1,) * 3 + (-1.0,) * 2 + (0.0,))


def _design_row(name: str, design: str, r: dict) -> str:
    return (f"| {name} | {design} | {r['sweeps_effect']:.3f} | {r['false_discovery_rate']:.3f} | "
            f"{r['sweeps_harm']:.3f} | {r['sweeps_helps']:.3f} | {r[decide.HELPS]:.3f} | {r[decide.UNDECIDED]:.2f} | "
            f"{r['runs']:.1f} | {r['seeds_per_policy']:.2f} |")


def sequential_simulate(path: Path, n_sweeps: int = 1000) -> None:
    model = simulate.NoiseModel.load(path)
    plan = sequential.schedule()
    print(f"{n_sweeps} simulated sweeps of 20 policies per row (noise model {path.name}), bh; the sequential design "
          f"looks at {plan.seeds} seeds spending {', '.join(f'{a:.4f}' for a in plan.alphas)} ({plan.kind}). "
          "helps: the share of all policies given `helps`; runs: the expected runs of a sweep, baseline included.\n")
    print("| scenario | design | any wrong effect | wrong among effects (FDR) | false harm | false helps | helps "
          "| undecided | runs | seeds per policy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, make in SEQUENTIAL_SCENARIOS.items():
        for seeds in (3, 5, 10):
            print(_design_row(name, f"fixed {seeds}", simulate.rates(model, n_sweeps, 20, seeds, make(model), "bh",
                                                                     seed=seeds)))
        print(_design_row(name, "sequential", simulate.sequential_rates(model, n_sweeps, 20, plan, make(model), "bh",
                                                                        seed=10)))
    print("\nSchedules and spending functions, 20 policies (no effect; one shift-like among 19) and a sweep of 6 (3 "
          "shift-like, 2 that cost a point, 1 without effect): any wrong effect under no effect, the shift-like "
          "policy's `helps` share, and expected runs.\n")
    print("| looks | spending | alpha per look | no effect: any wrong effect | one shift: its helps | one shift: runs "
          "| 6 policies: helps | 6 policies: runs (of 70) |")
    print("|---|---|---|---|---|---|---|---|")
    shift = SEQUENTIAL_SCENARIOS["one shift-like among 19 without effect"](model)
    for kind in sequential.SPENDING:
        for step in (1, 2, 3, 7):
            p = sequential.schedule(step=step, kind=kind)
            null = simulate.sequential_rates(model, n_sweeps, 20, p, simulate.Scenario(), "bh", seed=10)
            one = simulate.sequence(model, n_sweeps, 20, p, shift, "bh", seed=10)
            six = simulate.sequential_rates(model, n_sweeps, 6, p, SIX, "bh", seed=10)
            print(f"| {', '.join(map(str, p.seeds))} | {kind} | {', '.join(f'{a:.4f}' for a in p.alphas)} | "
                  f"{null['sweeps_effect']:.3f} | {(one['verdict'][:, 0] == decide.HELPS).mean():.2f} | "
                  f"{one['runs'].mean():.1f} | {six[decide.HELPS]:.3f} | {six['runs']:.1f} |")
    for seeds in (3, 5, 10):
        one = simulate.decided(model, n_sweeps, 20, seeds, shift, "bh", seed=10)
        six = simulate.rates(model, n_sweeps, 6, seeds, SIX, "bh", seed=10)
        print(f"| fixed {seeds} | | | | {(one[:, 0] == decide.HELPS).mean():.2f} | {21 * seeds} | "
              f"{six[decide.HELPS]:.3f} | {7 * seeds} |")


def _block_inputs(block: pd.DataFrame, failed: pd.DataFrame, opts: dict) -> dict:
    """One block's (policies, seeds) differences, per-run flags and decide's settings, as summary._block makes
    them, with the seeds in the order they ran."""
    base = block[block["augmentation"] == BASELINE]
    policies = sorted(a for a in block["augmentation"].unique() if a != BASELINE)
    seeds = sorted(block["seed"].unique())
    groups = {a: block[block["augmentation"] == a] for a in policies}
    if opts["gap"] == "paired_auc":
        d_gap = np.array([summary._paired_curves(groups[a], base, seeds) for a in policies])
    else:
        d_gap = np.array([summary._matrix(groups[a], base, f"gap_{opts['gap']}", seeds) for a in policies])
    d_score = np.array([summary._matrix(groups[a], base, "test_score", seeds) for a in policies])
    late = np.array([[bool(groups[a].loc[groups[a]["seed"] == s, "unfinished"].any()) for s in seeds]
                     for a in policies])
    lost = set(zip(failed["augmentation"].astype(str), failed["seed"].astype(int))) if len(failed) else set()
    broken = np.array([[(a, int(s)) in lost for s in seeds] for a in policies])
    margin, _ = summary.margins(block["score_metric"].iloc[0], base, opts)
    steps = block["score_step"].astype(float)
    return {"policies": policies, "seeds": seeds, "d_gap": d_gap, "d_score": d_score, "unfinished": late,
            "failed": broken, "margin": margin,
            "gap_margin": float(opts["margin"]["gap"]) * abs(base["gap"].astype(float).mean()),
            "step": float(steps.max()) if steps.notna().any() else 0.0}


def sequential_replay(experiment: str, overrides: list[str]) -> None:
    cfg = compose_from_argv([f"experiment_name={experiment}", *overrides])
    finished, failed, _ = report.runs_of(cfg)
    if finished.empty:
        raise SystemExit(f"error: experiment_name: no finished runs in MLflow experiment {experiment!r}")
    opts = summary.options()
    runs = summary.per_run(finished, report.histories(cfg, finished), opts["gap"])
    fixed = summary.summary(runs, opts, failed.rename(columns={"tags.seed": "seed"}) if len(failed) else None)
    plan = sequential.schedule()
    print(f"Looks at {plan.seeds} seeds, alpha per look {', '.join(f'{a:.4f}' for a in plan.alphas)} ({plan.kind}); "
          f"the seeds in the order they ran; the fixed verdict from every recorded seed at alpha "
          f"{opts['alpha']}.\n")
    print("| block | policy | stopped at look | seeds | sequential verdict | why | all-seed verdict | same |")
    print("|---|---|---|---|---|---|---|---|")
    used, everything, all_time, used_time = 0, 0, 0.0, 0.0
    for key, block in runs.groupby(summary.GROUP):
        inputs = _block_inputs(block, failed, opts)
        out = sequential.run(inputs["d_gap"], inputs["d_score"], plan, failed=inputs["failed"],
                             unfinished=inputs["unfinished"], correction=opts["correction"], margin=inputs["margin"],
                             score_floor=inputs["step"], gap_margin=inputs["gap_margin"])
        verdicts = fixed.set_index("augmentation")["verdict"]
        name = "/".join(str(k) for k in key[:2])
        for i, policy in enumerate(inputs["policies"]):
            same = "yes" if out["verdict"][i] == verdicts.get(policy) else "no"
            print(f"| {name} | {policy} | {out['look'][i] + 1} | {out['seeds'][i]} | {out['verdict'][i]} | "
                  f"{out['reason'][i]} | {verdicts.get(policy, '')} | {same} |")
        ran = {BASELINE: int(out["baseline_seeds"]), **dict(zip(inputs["policies"], out["seeds"].tolist()))}
        rank = {s: i for i, s in enumerate(inputs["seeds"])}
        kept = block[[rank[s] < ran.get(a, 0) for a, s in zip(block["augmentation"], block["seed"])]]
        used, everything = used + int(out["runs"]), everything + len(block)
        used_time += float(kept["time_total_s"].sum())
        all_time += float(block["time_total_s"].sum())
    print(f"\nRuns: {used} of {everything} ({used / everything:.0%}); recorded run time: {used_time / 60:.1f} of "
          f"{all_time / 60:.1f} min ({used_time / all_time:.0%}).")


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if "=" in a]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("estimators", "fit", "simulate", "flags", "seeds", "sequential",
                                         "sequential-simulate"))
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
    elif args.what == "sequential":
        sequential_replay(args.names[0], overrides)
    elif args.what == "sequential-simulate":
        sequential_simulate(Path(args.names[0]))
    elif args.what == "simulate":
        simulate_all(Path(args.names[0]), args.effect_from, overrides)
    else:
        flags(args.names, overrides)


if __name__ == "__main__":
    main(sys.argv[1:])
