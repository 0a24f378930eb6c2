"""The decision rule: one verdict per policy from two endpoints, each compared with the baseline paired by seed.

For every policy of a sweep, against the baseline (`none`) of the same dataset, model, setting and task:
- delta gap   = policy - baseline of the gap estimator (report.gap; lower = less overfitting);
- delta score = policy - baseline of the test score (accuracy; PSNR for the image tasks; higher = better).
Each is a paired t test over the seeds, with a 95% t interval of the mean difference. The k policies of one
baseline and both endpoints make one family of 2k tests, whose p values are adjusted for multiplicity
(report.correction: Benjamini-Hochberg by default, Holm, or none). A test is significant when its adjusted p value is below
report.alpha. Then, in this order:

1. the score is significantly lower:   `regularizes, costs accuracy` when the gap is significantly lower too,
                                        `hurts` otherwise. Such a policy is never recommended;
2. the gap is significantly lower, or the score significantly higher:
                                        `helps` when the score's 95% interval lies above -report.margin (the
                                        score is shown to be no more than the margin lower), `gap lower, cost
                                        unclear` when it does not (more seeds decide it);
3. the gap is significantly wider:      `widens gap`;
4. otherwise:                           `no clear effect`.

Everything here works on arrays (one row per policy, one column per seed, NaN for a missing seed), so the
calibration simulations (ablation/simulate.py) run the very code the report runs."""
from __future__ import annotations

import numpy as np
from scipy import stats

HELPS, COST_UNCLEAR, NO_EFFECT = "helps", "gap lower, cost unclear", "no clear effect"
WIDENS, COSTS, HURTS = "widens gap", "regularizes, costs accuracy", "hurts"
BASELINE = "baseline"
# The order rows are sorted in: recommendations first, then what more seeds may decide, then the rest.
VERDICTS = (HELPS, COST_UNCLEAR, NO_EFFECT, WIDENS, COSTS, HURTS)
CORRECTIONS = ("bh", "holm", "none")
LEVEL = 0.95  # of every interval shown
MAX_SEEDS = 50  # seeds_needed beyond this is reported as "more than 50"

RULE = ("Each policy is compared with `none` paired by seed, on two endpoints: the gap (lower = less overfitting) "
        "and the test score (accuracy; PSNR for image tasks). Paired t tests; the p values of both endpoints of "
        "all of a sweep's policies are adjusted together ({correction}); significant = adjusted p < {alpha}. "
        "hurts: the test score is significantly lower (with the gap also significantly lower: regularizes, "
        "costs accuracy). Never recommended. "
        "helps: the gap is significantly lower or the score significantly higher, and the score's 95% interval "
        "lies above -{margin} (no more than the margin lower); when that interval reaches further down: gap lower, "
        "cost unclear. widens gap: the gap is significantly wider. Otherwise: no clear effect.")
CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm", "none": "no correction"}


def paired(d: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of paired differences (NaN = missing seed): n, mean, sd (ddof=1), the 95% t interval of the mean
    and the two-sided p value of the one-sample t test against 0 (what scipy.stats.ttest_1samp gives)."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    n = np.sum(np.isfinite(d), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(n[..., None] > 0, d, 0.0), axis=-1)
        mean = np.where(n > 0, mean, np.nan)
        sd = np.sqrt(np.nansum((d - mean[..., None]) ** 2, axis=-1) / (n - 1))
        sd = np.where(n > 1, sd, np.nan)
        se = sd / np.sqrt(n)
        df = np.maximum(n - 1, 1)
        half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
        p = np.where(n > 1, 2 * stats.t.sf(np.abs(t), df), np.nan)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "p": p}


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """p values adjusted for multiplicity along the last axis (one family per row); NaN stays NaN and counts in
    no family. bh: Benjamini-Hochberg (false discovery rate, via scipy.stats.false_discovery_control); holm:
    Holm's step-down (family-wise error rate); none: unchanged."""
    if correction not in CORRECTIONS:
        raise ValueError(f"report.correction: expected one of {'|'.join(CORRECTIONS)}, got {correction!r}")
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    for index in np.ndindex(p.shape[:-1]):
        row = p[index]
        ok = np.isfinite(row)
        if not ok.any():
            continue
        if correction == "none":
            out[index][ok] = row[ok]
        elif correction == "bh":
            out[index][ok] = stats.false_discovery_control(row[ok], method="bh")
        else:
            out[index][ok] = _holm(row[ok])
    return out


def _holm(p: np.ndarray) -> np.ndarray:
    m = len(p)
    order = np.argsort(p)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def verdicts(gap: dict, score: dict, gap_adjusted: np.ndarray, score_adjusted: np.ndarray, alpha: float,
             margin: float) -> np.ndarray:
    """The rule of this module's docstring, elementwise. gap, score: paired() of the differences; *_adjusted:
    their adjusted p values."""
    with np.errstate(invalid="ignore"):
        gap_down = (gap_adjusted < alpha) & (gap["mean"] < 0)
        gap_up = (gap_adjusted < alpha) & (gap["mean"] > 0)
        score_down = (score_adjusted < alpha) & (score["mean"] < 0)
        score_up = (score_adjusted < alpha) & (score["mean"] > 0)
        within_margin = score["low"] > -margin
    return np.select([score_down & gap_down, score_down, (gap_down | score_up) & within_margin, gap_down | score_up,
                      gap_up], [COSTS, HURTS, HELPS, COST_UNCLEAR, WIDENS], NO_EFFECT)


def decide(d_gap: np.ndarray, d_score: np.ndarray, correction: str = "bh", alpha: float = 0.05,
           margin: float = 0.01) -> dict[str, np.ndarray]:
    """The whole decision for one family (rows = the policies of one baseline, columns = seeds): the paired
    statistics of both endpoints, raw and adjusted p values, the verdict with and without the correction."""
    gap, score = paired(d_gap), paired(d_score)
    # Both endpoints of every policy are one family: a sweep with no true effect gives any verdict at all with a
    # chance of at most alpha (Holm), or at most alpha of its verdicts are wrong (BH).
    both = adjust(np.concatenate([gap["p"], score["p"]], axis=-1), correction)
    gap_adjusted, score_adjusted = both[..., :gap["p"].shape[-1]], both[..., gap["p"].shape[-1]:]
    return {"gap": gap, "score": score, "gap_p_adjusted": gap_adjusted, "score_p_adjusted": score_adjusted,
            "verdict": verdicts(gap, score, gap_adjusted, score_adjusted, alpha, margin),
            "verdict_raw": verdicts(gap, score, gap["p"], score["p"], alpha, margin)}


def seeds_for(effect: float, sd: float, level: float, power: float = 0.8, sides: int = 2) -> float:
    """The smallest number of seeds at which a paired t test at `level` detects a true mean difference `effect`
    (seed-to-seed sd `sd`) with the given power (noncentral t). inf beyond MAX_SEEDS or without an effect; NaN
    without a spread (fewer than two seeds)."""
    if not np.isfinite(sd):  # fewer than two seeds: no spread to plan from
        return np.nan
    if not np.isfinite(effect) or effect == 0:
        return np.inf
    if sd == 0:
        return 2.0
    for n in range(2, MAX_SEEDS + 1):
        critical = stats.t.ppf(1 - level / sides, n - 1)
        if stats.nct.sf(critical, n - 1, abs(effect) / sd * np.sqrt(n)) >= power:
            return float(n)
    return np.inf


def next_level(p_adjusted: np.ndarray, alpha: float, correction: str) -> float:
    """The raw p level the next policy of a family must reach to become significant: the step of the correction
    after the rejections already made (Bonferroni's alpha/k before any, for Holm; BH's (R+1)/k * alpha)."""
    finite = np.asarray(p_adjusted, dtype=float)
    finite = finite[np.isfinite(finite)]
    k, rejected = max(len(finite), 1), int(np.sum(finite < alpha))
    if correction == "none":
        return alpha
    if correction == "holm":
        return alpha / max(k - rejected, 1)
    return alpha * min(rejected + 1, k) / k


def seeds_needed(verdict: str, gap: dict, score: dict, i: int, level: float, margin: float,
                 power: float = 0.8) -> float:
    """For an undecided row i: the seeds at which its observed effect would be decided with the given power at
    the raw p level the correction asks of the next rejection (next_level; the endpoint that gets there first); for `gap lower, cost unclear`, the seeds at which the score's interval
    would clear -margin. NaN for decided rows."""
    if verdict == COST_UNCLEAR:  # an interval that reaches below -margin: decided once it clears it
        room = score["mean"][i] + margin
        return seeds_for(room, score["sd"][i], 1 - LEVEL, power, sides=2) if room > 0 else np.inf
    if verdict != NO_EFFECT:
        return np.nan
    return float(np.fmin(seeds_for(gap["mean"][i], gap["sd"][i], level, power),
                         seeds_for(score["mean"][i], score["sd"][i], level, power)))
