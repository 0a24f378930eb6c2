"""Whole sweeps simulated from a noise model fitted to real runs, decided by the report's own rule
(ablation/report/decide.py, vectorised over sweeps): what each verdict's error rate is in the scenarios a real sweep can
be in.

The model, per block (dataset, model, setting) of a real sweep: a run's (gap, test score) is its policy's mean plus
a seed effect shared by every policy of that seed (it cancels in the paired difference) plus the run's own noise,
bivariate normal. The paired difference of a policy with `none` therefore carries the policy run's noise and the
baseline run's, and the differences of all policies share the baseline's: it is simulated that way, not as
independent differences. The run noise's covariance is half the pooled covariance of the real paired differences;
each simulated policy's noise is scaled by a real policy's own spread relative to the pooled one (drawn from the
real policies), since some policies (flips) are much noisier than others. Scores are in the report's unit
(accuracy in points).

Scenarios (Scenario's fields, combinable): true effects per policy; skewed noise (a share of bad seeds: runs far
below their policy's mean, the rest shifted so the mean effect is unchanged); step-valued accuracy (every run's
score rounded to one test image); missing seeds; failed runs. Different training lengths are a curve-level
scenario: training_lengths() simulates gap curves stopped at different epochs and returns the paired
differences each gap estimator gives."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablation.core import curves
from ablation.report import decide, sequential


@dataclass(frozen=True)
class NoiseModel:
    sd_gap: float  # of one run's gap around its policy's mean, seeds' shared effect removed
    sd_score: float  # likewise, of the test score (accuracy in points)
    correlation: float  # between a run's gap noise and its score noise
    scales: list = field(default_factory=lambda: [1.0])  # real policies' spread relative to the pooled one
    source: str = ""

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> NoiseModel:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Scenario:
    """What is true in the simulated sweeps, and what goes wrong in them."""
    effect_gap: float | tuple = 0.0  # each policy's true mean difference (one for all, or one per policy)
    effect_score: float | tuple = 0.0
    bad_seeds: float = 0.0  # share of policy runs far below their policy's mean score (skewed noise)
    step: float = 0.0  # one test image in points: every run's score is rounded to it (0: continuous)
    missing: float = 0.0  # share of (policy, seed) pairs without a run
    failed: float = 0.0  # chance that a policy has a failed run (it stays undecided)
    margin: float = 0.3  # the score's margin (points; 10% more errors than none at 97%)
    gap_margin: float = 0.03  # the gap's equivalence margin
    baseline_score: float = 97.0  # none's mean test score, where scores are rounded


def fit(runs: pd.DataFrame, baseline: str = "none", source: str = "") -> NoiseModel:
    """The noise model of per-run rows (summary.per_run: augmentation, seed, gap, test_score) of one block."""
    base = runs[runs["augmentation"] == baseline].set_index("seed")[["gap", "test_score"]].astype(float)
    residuals, spreads = [], []
    for _, group in runs[runs["augmentation"] != baseline].groupby("augmentation"):
        d = (group.set_index("seed")[["gap", "test_score"]].astype(float) - base).dropna()
        if len(d) < 2:
            continue
        centred = (d - d.mean()).to_numpy() * np.sqrt(len(d) / (len(d) - 1))  # unbiased per policy
        residuals.append(centred)
        spreads.append(centred.std(axis=0, ddof=0))
    if not residuals:
        raise ValueError("a noise model needs at least one policy with two seeds paired with the baseline")
    pooled = np.cov(np.concatenate(residuals).T, ddof=0) / 2  # a difference carries two runs' noise
    sd = np.sqrt(np.diag(pooled))
    # A real difference's spread relative to the pooled one, r, carries the baseline's noise too: the policy's
    # own noise is scaled by sqrt(2 r^2 - 1) so that policy noise plus baseline noise has the real spread.
    relative = [float(np.mean((s / np.sqrt(2) / sd) ** 2)) for s in spreads]
    scales = [float(np.sqrt(max(2 * r - 1, 0.05))) for r in relative]
    return NoiseModel(float(sd[0]), float(sd[1]), float(pooled[0, 1] / (sd[0] * sd[1])), scales, source)


def sweeps(model: NoiseModel, n_sweeps: int, n_policies: int, n_seeds: int, scenario: Scenario = Scenario(),
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Simulated paired differences (policy - none): two arrays (sweeps, policies, seeds), NaN where a seed is
    missing."""
    rng = np.random.default_rng(seed)
    cov = np.array([[model.sd_gap ** 2, model.correlation * model.sd_gap * model.sd_score],
                    [model.correlation * model.sd_gap * model.sd_score, model.sd_score ** 2]])
    base = rng.multivariate_normal([0, 0], cov, size=(n_sweeps, 1, n_seeds))
    scale = rng.choice(np.asarray(model.scales, dtype=float), size=(n_sweeps, n_policies, 1, 1))
    own = rng.multivariate_normal([0, 0], cov, size=(n_sweeps, n_policies, n_seeds)) * scale
    if scenario.bad_seeds:
        # A bad seed loses 4 of its policy's sds; the others gain enough that the mean effect stays as set.
        bad = rng.random((n_sweeps, n_policies, n_seeds)) < scenario.bad_seeds
        drop = 4 * model.sd_score * scale[..., 0]
        own[..., 1] += np.where(bad, -drop, drop * scenario.bad_seeds / (1 - scenario.bad_seeds))
    effect_gap = np.broadcast_to(np.asarray(scenario.effect_gap, dtype=float), (n_policies,))[None, :, None]
    effect_score = np.broadcast_to(np.asarray(scenario.effect_score, dtype=float), (n_policies,))[None, :, None]
    gap = own[..., 0] - base[..., 0] + effect_gap
    policy_score, base_score = scenario.baseline_score + own[..., 1] + effect_score, scenario.baseline_score + base[..., 1]
    if scenario.step:
        policy_score = np.round(policy_score / scenario.step) * scenario.step
        base_score = np.round(base_score / scenario.step) * scenario.step
    score = policy_score - base_score
    if scenario.missing:
        gone = rng.random(gap.shape) < scenario.missing
        gap, score = np.where(gone, np.nan, gap), np.where(gone, np.nan, score)
    return gap, score


def decided(model: NoiseModel, n_sweeps: int, n_policies: int, n_seeds: int, scenario: Scenario = Scenario(),
            correction: str = "bh", alpha: float = 0.05, seed: int = 0) -> np.ndarray:
    """The report's verdicts for every simulated sweep: (sweeps, policies) strings."""
    gap, score = sweeps(model, n_sweeps, n_policies, n_seeds, scenario, seed)
    failed = None
    if scenario.failed:
        failed = (np.random.default_rng(seed + 1).random((n_sweeps, n_policies)) < scenario.failed).astype(int)
    return decide.decide(gap, score, correction, alpha, scenario.margin, score_floor=scenario.step,
                         gap_margin=scenario.gap_margin, failed=failed, total=n_seeds)["verdict"]


def wrong(verdicts: np.ndarray, scenario: Scenario, n_policies: int) -> dict[str, np.ndarray]:
    """Which verdicts claim what is not true, (sweeps, policies) booleans per kind:
    effect: any verdict that claims an effect the policy does not have (helps, gap lower, widens, hurts, costs);
    harm: hurts or costs accuracy where the true score is not lower;
    helps: helps where the gap is not lower and the score not higher, or the score is more than the margin lower;
    equivalent: equivalent where either true effect lies outside its margin."""
    eg = np.broadcast_to(np.asarray(scenario.effect_gap, dtype=float), (n_policies,))[None, :]
    es = np.broadcast_to(np.asarray(scenario.effect_score, dtype=float), (n_policies,))[None, :]
    v = np.asarray(verdicts)
    harm = np.isin(v, decide.HARM) & (es >= 0)
    helps = (v == decide.HELPS) & (~((eg < 0) | (es > 0)) | (es < -scenario.margin))
    lower = np.isin(v, (decide.HELPS, decide.COST_UNCLEAR)) & ~((eg < 0) | (es > 0))
    widens = (v == decide.WIDENS) & (eg <= 0)
    costs = (v == decide.COSTS) & (eg >= 0)
    equivalent = (v == decide.EQUIVALENT) & ((np.abs(eg) > scenario.gap_margin) | (np.abs(es) > scenario.margin))
    return {"effect": harm | helps | lower | widens | costs, "harm": harm, "helps": helps, "equivalent": equivalent}


def rates(model: NoiseModel, n_sweeps: int, n_policies: int, n_seeds: int, scenario: Scenario = Scenario(),
          correction: str = "bh", alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Per kind of wrong verdict (wrong()): the share of sweeps with at least one, and the share of policies;
    the false discovery rate of the effect verdicts; the share of policies given each verdict; and the runs of
    the design (runs: policies and baseline at n_seeds; seeds_per_policy)."""
    v = decided(model, n_sweeps, n_policies, n_seeds, scenario, correction, alpha, seed)
    return {**tally(v, scenario, n_policies), "runs": float((n_policies + 1) * n_seeds),
            "seeds_per_policy": float(n_seeds)}


def tally(v: np.ndarray, scenario: Scenario, n_policies: int) -> dict[str, float]:
    """rates() of given (sweeps, policies) verdicts."""
    claims = np.isin(v, decide.EFFECTS)
    wrong_claims = wrong(v, scenario, n_policies)["effect"]
    # Benjamini-Hochberg's promise: the expected share of wrong ones among the effect verdicts given.
    out = {"false_discovery_rate": float(np.mean(wrong_claims.sum(axis=1) / np.maximum(claims.sum(axis=1), 1)))}
    for kind, mask in wrong(v, scenario, n_policies).items():
        out[f"sweeps_{kind}"] = float(mask.any(axis=1).mean())
        out[f"policies_{kind}"] = float(mask.mean())
    for name in (*decide.VERDICTS, "failed"):
        out[name] = float((np.char.startswith(v.astype(str), "undecided: ") & ~(v == decide.UNFINISHED)).mean()
                          if name == "failed" else (v == name).mean())
    return out


def sequence(model: NoiseModel, n_sweeps: int, n_policies: int, plan: sequential.Schedule,
             scenario: Scenario = Scenario(), correction: str = "bh", seed: int = 0) -> dict[str, np.ndarray]:
    """Simulated sweeps run by the sequential design (sequential.run over plan.maximum seeds, each look at its
    own alpha): its per-row verdicts, looks and seeds and per-sweep runs. The same draws as decided() with
    n_seeds = plan.maximum; a policy with a failed run (Scenario.failed) has it at its first seed."""
    gap, score = sweeps(model, n_sweeps, n_policies, plan.maximum, scenario, seed)
    failed = None
    if scenario.failed:
        failed = np.zeros(gap.shape, dtype=bool)
        failed[..., 0] = np.random.default_rng(seed + 1).random((n_sweeps, n_policies)) < scenario.failed
    return sequential.run(gap, score, plan, failed=failed, correction=correction, margin=scenario.margin,
                          score_floor=scenario.step, gap_margin=scenario.gap_margin)


def sequential_rates(model: NoiseModel, n_sweeps: int, n_policies: int, plan: sequential.Schedule,
                     scenario: Scenario = Scenario(), correction: str = "bh", seed: int = 0) -> dict[str, float]:
    """rates() of the sequential design: the final verdicts' error rates and shares, and its expected runs
    (runs, baseline's seeds and every policy's), mean seeds per policy and the share of policies stopped at
    each look (stopped_k)."""
    out = sequence(model, n_sweeps, n_policies, plan, scenario, correction, seed)
    rates_ = {**tally(out["verdict"], scenario, n_policies), "runs": float(out["runs"].mean()),
              "seeds_per_policy": float(out["seeds"].mean()), "baseline_seeds": float(out["baseline_seeds"].mean())}
    return {**rates_, **{f"stopped_{k}": float((out["look"] == k).mean()) for k in range(len(plan.seeds))}}


def training_lengths(n_pairs: int, amplitude: float = 0.3, tau: float = 15.0, policy_epochs=(30, 60),
                     baseline_epochs=(30, 60), noise: float = 0.01, seed: int = 0) -> dict[str, np.ndarray]:
    """Gap curves amplitude (1 - e^(-t / tau)) with per-epoch noise, the same for policy and baseline (no true
    effect), the policy stopped after an epoch count drawn from policy_epochs and the baseline from
    baseline_epochs: each pair's difference by auc (per run, over its own epochs) and by paired_auc (over the
    epochs both trained). One row of n_pairs seeds."""
    rng = np.random.default_rng(seed)
    auc, shared = [], []
    for _ in range(n_pairs):
        runs = []
        for low, high in (policy_epochs, baseline_epochs):
            t = np.arange(1, rng.integers(low, high + 1) + 1)
            runs.append(amplitude * (1 - np.exp(-t / tau)) + rng.normal(0, noise, len(t)))
        auc.append(np.mean(runs[0]) - np.mean(runs[1]))
        shared.append(curves.paired(runs[0], runs[1]))
    return {"auc": np.array(auc)[None], "paired_auc": np.array(shared)[None]}
