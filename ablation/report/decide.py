"""The decision rule: one verdict per policy from two endpoints, each compared with the baseline paired by seed.

For every policy of a sweep, against the baseline (`none`) of the same dataset, model, setting and task:
- delta gap   = policy - baseline of the gap estimator (report.gap; lower = less overfitting);
- delta score = policy - baseline of the test score (accuracy in points; PSNR in dB; higher = better).
Each is a paired t test over the seeds; an accuracy's spread is floored at one test image (ablation/core/stats.py), so
identical step-valued differences at two or three seeds decide nothing. The two endpoints are two families, each
at report.alpha / 2 and corrected within itself (report.correction: Benjamini-Hochberg by default, Holm, or
none): the gap tests never loosen the bar for the score tests, and with no true effect anywhere the chance of any
effect verdict is at most alpha. Then, in this order:

1. failed runs, or unfinished training in at least half the seeds: `undecided: k/N runs failed`,
   `undecided: unfinished` (what the rule would say otherwise is kept in `verdict_rule`);
2. the score is significantly lower (corrected): `regularizes, costs accuracy` when the gap is significantly
   lower too, `hurts` otherwise;
3. the gap is significantly lower, or the score significantly higher:
     `gap lower, cost unclear` when the score's raw 95% interval lies below zero (a measured loss is never
         corrected away into `helps`) or its selection-adjusted interval reaches below -margin;
     `helps` otherwise: the score is shown higher, or shown to be no more than the margin lower by an interval
         adjusted for the policies selected (Benjamini-Yekutieli's false coverage rate; Bonferroni under holm);
4. the gap is significantly wider: `widens gap` (on any other row, the flag `gap wider`);
5. both endpoints shown within their margins (two one-sided tests, corrected): `equivalent`;
6. otherwise: `undecided`.

Everything here works on arrays (rows = the policies of one baseline, columns = seeds, any leading axes = other
families, NaN = missing seed), so the simulations (ablation/report/simulate.py) run the very code the report runs."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from ablation.core import stats

HELPS, COST_UNCLEAR, EQUIVALENT, UNDECIDED = "helps", "gap lower, cost unclear", "equivalent", "undecided"
UNFINISHED = "undecided: unfinished"
WIDENS, COSTS, HURTS = "widens gap", "regularizes, costs accuracy", "hurts"
BASELINE_ROW = "baseline"  # the verdict column of the baseline policy's own row
GAP_WIDER = "gap wider"  # the flag of a row whose gap is significantly wider and whose verdict says something else
SCORE_LOWER = "score lower (raw 95%)"  # the flag of a row whose raw score interval lies below zero, not a harm verdict
# The order rows are sorted in: recommendations first, then what is open, then the rest. `undecided: k/N runs
# failed` sorts with `undecided: unfinished`.
VERDICTS = (HELPS, COST_UNCLEAR, EQUIVALENT, UNDECIDED, UNFINISHED, WIDENS, COSTS, HURTS)
HARM = (COSTS, HURTS)
EFFECTS = (HELPS, COST_UNCLEAR, WIDENS, COSTS, HURTS)  # the verdicts that claim an effect
CORRECTIONS = stats.CORRECTIONS
LEVEL = stats.LEVEL
MAX_SEEDS = 50  # seeds_needed beyond this is reported as "more than 50"

RULE = ("Each policy is compared with `none` paired by seed, on two endpoints: the gap (lower = less overfitting) "
        "and the test score (accuracy in points, its spread floored at one test image; PSNR in dB). Paired t "
        "tests; each endpoint is its own family at alpha/2 = {half} ({correction}). "
        "hurts: the test score is significantly lower (with the gap also significantly lower: regularizes, "
        "costs accuracy). "
        "helps: the gap is significantly lower or the score significantly higher, the score's raw 95% interval "
        "does not lie below zero, and the score is shown higher or its selection-adjusted interval lies above minus "
        "{margin}; otherwise gap lower, "
        "cost unclear. widens gap: the gap is significantly wider (elsewhere flagged gap wider). "
        "equivalent: both endpoints shown within their margins (TOST). undecided: none of these, or failed runs, "
        "or training unfinished in at least half the seeds.")
CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm", "none": "no correction"}

def failed_verdict(failed: int, total: int) -> str:
    return f"undecided: {failed}/{total} runs failed"


def significant(gap: dict, score: dict, gap_adjusted, score_adjusted, level: float) -> dict[str, np.ndarray]:
    """Which way each endpoint moved significantly: p values below `level` (alpha / 2 per family), by the sign of
    the mean difference."""
    with np.errstate(invalid="ignore"):
        return {"gap_down": (gap_adjusted < level) & (gap["mean"] < 0),
                "gap_up": (gap_adjusted < level) & (gap["mean"] > 0),
                "score_down": (score_adjusted < level) & (score["mean"] < 0),
                "score_up": (score_adjusted < level) & (score["mean"] > 0)}


def verdicts(moved: dict, score: dict, margin, ni_low, equivalent) -> np.ndarray:
    """Steps 2-6 of this module's docstring, elementwise. moved: significant()'s; score: stats.paired() of the
    score differences; ni_low: the lower end of the score interval the non-inferiority test uses; equivalent:
    both endpoints shown within their margins."""
    with np.errstate(invalid="ignore"):
        measured_loss = (score["p"] < 1 - LEVEL) & (score["mean"] < 0)  # the raw interval shown lies below zero
        within = ni_low > -np.asarray(margin)
    selected = moved["gap_down"] | moved["score_up"]
    # A score shown higher (corrected) is shown no lower than the margin too; otherwise the adjusted interval must.
    return np.select([moved["score_down"] & moved["gap_down"], moved["score_down"],
                      selected & ~measured_loss & (moved["score_up"] | within), selected, moved["gap_up"],
                      equivalent], [COSTS, HURTS, HELPS, COST_UNCLEAR, WIDENS, EQUIVALENT], UNDECIDED)


def decide(d_gap, d_score, correction: str = "bh", alpha: float = 0.05, margin=1.0, score_floor=0.0,
           gap_margin=np.nan, failed=None, total=None, unfinished=None) -> dict[str, np.ndarray]:
    """The whole decision for one family (rows = the policies of one baseline, columns = seeds; leading axes are
    independent families). margin: how much lower the score may be (score units, one per row or one for all);
    score_floor: the score's smallest trusted spread (one test image); gap_margin: the equivalence margin of
    the gap; failed/total: failed runs and all runs per row; unfinished: rows flagged unfinished."""
    gap, score = stats.paired(d_gap), stats.paired(d_score, floor=score_floor)
    gap_adjusted, score_adjusted = stats.adjust(gap["p"], correction), stats.adjust(score["p"], correction)
    moved = significant(gap, score, gap_adjusted, score_adjusted, alpha / 2)
    ni_low, ni_high = stats.interval(score, ni_level(moved["gap_down"] | moved["score_up"], alpha, correction))
    tost_gap, tost_score = stats.tost(gap, gap_margin), stats.tost(score, margin)
    tost_gap_adjusted, tost_score_adjusted = stats.adjust(tost_gap, correction), stats.adjust(tost_score, correction)
    with np.errstate(invalid="ignore"):
        rule = verdicts(moved, score, margin, ni_low, (tost_gap_adjusted < alpha) & (tost_score_adjusted < alpha))
        # Without the correction: each test on its own at alpha, the raw interval behind helps.
        raw = verdicts(significant(gap, score, gap["p"], score["p"], alpha), score, margin,
                       stats.interval(score, 1 - alpha)[0], (tost_gap < alpha) & (tost_score < alpha))
    final = rule.astype(object)
    if unfinished is not None:
        final = np.where(np.asarray(unfinished, dtype=bool), UNFINISHED, final)
    if failed is not None:
        failed = np.broadcast_to(np.asarray(failed, dtype=int), rule.shape)
        total = np.broadcast_to(np.asarray(total, dtype=int), rule.shape)
        final = np.where(failed > 0, np.vectorize(failed_verdict, otypes=[object])(failed, total), final)
    return {"gap": gap, "score": score, "gap_p_adjusted": gap_adjusted, "score_p_adjusted": score_adjusted,
            "score_ni_low": ni_low, "score_ni_high": ni_high, "tost_p_gap": tost_gap_adjusted,
            "tost_p_score": tost_score_adjusted, "gap_wider": moved["gap_up"], "verdict": final.astype(str),
            "verdict_rule": rule,
            "verdict_raw": raw}


def ni_level(selected: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """The coverage of the score interval behind `helps`, per family. After selecting R of k policies (their gap
    significantly lower or score significantly higher), Benjamini and Yekutieli (2005) give intervals at
    1 - R alpha / k whose false coverage among the selected is at most alpha (bh); holm takes Bonferroni's
    1 - alpha / k, none the raw 1 - alpha."""
    selected = np.asarray(selected, dtype=bool)
    k = selected.shape[-1] if selected.ndim else 1
    if correction == "none" or k == 0:
        return np.full(selected.shape, 1 - alpha)
    if correction == "holm":
        return np.full(selected.shape, 1 - alpha / k)
    r = np.maximum(selected.sum(axis=-1, keepdims=True), 1)
    return np.broadcast_to(1 - r * alpha / k, selected.shape)


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
        critical = sps.t.ppf(1 - level / sides, n - 1)
        if sps.nct.sf(critical, n - 1, abs(effect) / sd * np.sqrt(n)) >= power:
            return float(n)
    return np.inf


def seeds_needed(verdict: str, gap_sd: float, score_sd: float, margin: float, gap_margin: float, alpha: float,
                 power: float = 0.8) -> float:
    """For an open row (`undecided`, `gap lower, cost unclear`): the seeds of a confirmatory sweep on fresh seeds
    that would settle it with the given power if the policy truly changed nothing, planned from the measured
    spreads and the margins alone. The effect seen so far is not used: planning from it takes noise for an
    effect, and a row with nothing to find would always be told to add seeds. NaN for decided rows."""
    if verdict == COST_UNCLEAR:  # shown non-inferior: the score's interval clears -margin
        return seeds_for(margin, score_sd, alpha, power, sides=2)
    if verdict != UNDECIDED:
        return np.nan
    # Equivalence: two one-sided tests at alpha each, per endpoint; planned like a two-sided test at 2 alpha.
    return float(np.fmax(seeds_for(gap_margin, gap_sd, 2 * alpha, power), seeds_for(margin, score_sd, 2 * alpha,
                                                                                     power)))
