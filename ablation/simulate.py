"""Whole sweeps simulated from a noise model fitted to real runs, decided by the report's own rule
(ablation/decide.py): the false-verdict rate with no true effect, and the power for a known effect.

The model, per block (dataset, model, setting) of a real sweep: a run's (gap, test score) is its policy's mean plus
a seed effect shared by every policy of that seed (it cancels in the paired difference) plus the run's own noise,
bivariate normal. The paired difference of a policy with `none` therefore carries the policy run's noise and the
baseline run's, and the differences of all policies share the baseline's: it is simulated that way, not as
independent differences. The run noise's covariance is half the pooled covariance of the real paired differences;
each simulated policy's noise is scaled by a real policy's own spread relative to the pooled one (drawn from the
real policies), since some policies (flips) are much noisier than others."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablation import decide


@dataclass(frozen=True)
class NoiseModel:
    sd_gap: float  # of one run's gap around its policy's mean, seeds' shared effect removed
    sd_score: float  # likewise, of the test score
    correlation: float  # between a run's gap noise and its score noise
    scales: list = field(default_factory=lambda: [1.0])  # real policies' spread relative to the pooled one
    source: str = ""

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> NoiseModel:
        return cls(**json.loads(Path(path).read_text()))


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


def sweeps(model: NoiseModel, n_sweeps: int, n_policies: int, n_seeds: int, effect_gap=0.0, effect_score=0.0,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Simulated paired differences (policy - none): two arrays (sweeps, policies, seeds). effect_*: the true
    mean difference of each policy (a scalar or one per policy)."""
    rng = np.random.default_rng(seed)
    cov = np.array([[model.sd_gap ** 2, model.correlation * model.sd_gap * model.sd_score],
                    [model.correlation * model.sd_gap * model.sd_score, model.sd_score ** 2]])
    base = rng.multivariate_normal([0, 0], cov, size=(n_sweeps, 1, n_seeds))
    scale = rng.choice(np.asarray(model.scales, dtype=float), size=(n_sweeps, n_policies, 1, 1))
    own = rng.multivariate_normal([0, 0], cov, size=(n_sweeps, n_policies, n_seeds)) * scale
    d = own - base
    return (d[..., 0] + np.broadcast_to(effect_gap, (n_policies,))[None, :, None],
            d[..., 1] + np.broadcast_to(effect_score, (n_policies,))[None, :, None])


def verdicts(d_gap: np.ndarray, d_score: np.ndarray, correction: str, alpha: float = 0.05,
             margin: float = 0.01) -> np.ndarray:
    """The report's verdicts for every simulated sweep: (sweeps, policies) strings."""
    return np.array([decide.decide(g, s, correction, alpha, margin)["verdict"] for g, s in zip(d_gap, d_score)])


def false_verdicts(model: NoiseModel, n_sweeps: int, n_policies: int, n_seeds: int, correction: str,
                   alpha: float = 0.05, margin: float = 0.01, seed: int = 0) -> dict[str, float]:
    """With no true effect: the share of policies given any verdict but `no clear effect`, and the share of
    sweeps with at least one."""
    v = verdicts(*sweeps(model, n_sweeps, n_policies, n_seeds, seed=seed), correction, alpha, margin)
    wrong = v != decide.NO_EFFECT
    return {"per_policy": float(wrong.mean()), "per_sweep": float(wrong.any(axis=1).mean())}


def power(model: NoiseModel, effect_gap: float, effect_score: float, n_sweeps: int, n_policies: int, n_seeds: int,
          correction: str, expected: str, n_effects: int = 1, alpha: float = 0.05, margin: float = 0.01,
          seed: int = 0) -> float:
    """The share of policies with the given true effect that get the `expected` verdict, in sweeps where
    n_effects of the n_policies have it and the rest have none."""
    gap = np.r_[np.full(n_effects, effect_gap), np.zeros(n_policies - n_effects)]
    score = np.r_[np.full(n_effects, effect_score), np.zeros(n_policies - n_effects)]
    v = verdicts(*sweeps(model, n_sweeps, n_policies, n_seeds, gap, score, seed=seed), correction, alpha, margin)
    return float((v[:, :n_effects] == expected).mean())
