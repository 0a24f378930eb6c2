"""Shared statistics of the report and its lenses: paired differences over seeds, multiplicity corrections,
equivalence (TOST), selection-adjusted intervals and the step of a count-valued score. Plain numpy/scipy on arrays with one
row per comparison and one column per seed (NaN = a missing seed), so simulations run the very code the report
runs.

Step-valued scores. An accuracy moves in steps of one test image: two seeds that each get one image fewer right
have paired differences with no spread at all, and a t test on them gives p = 0. `floor` is the smallest spread
such a score can be trusted to have: one step (1 / the number of test images; per class, 1 / that class's images).
The standard deviation a test uses is max(sd, floor), so identical step-valued differences decide nothing by
themselves at 2 or 3 seeds (t = sqrt(n): p = 0.39 at 2 seeds, 0.23 at 3)."""
from __future__ import annotations

import fractions
import math

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # of every raw interval shown
CORRECTIONS = ("bh", "holm", "none")


def paired(d: np.ndarray, floor: float | np.ndarray = 0.0, level: float = LEVEL) -> dict[str, np.ndarray]:
    """Per row of paired differences: n, mean, sd (ddof=1, as measured), sd_used (max(sd, floor): what the test
    and interval use), the `level` t interval of the mean and the two-sided p value of the one-sample t test
    against 0 (scipy.stats.ttest_1samp's where the spread is above the floor)."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    n = np.sum(np.isfinite(d), axis=-1)
    floor = np.broadcast_to(np.asarray(floor, dtype=float), n.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(n[..., None] > 0, d, 0.0), axis=-1)
        mean = np.where(n > 0, mean, np.nan)
        sd = np.sqrt(np.nansum((d - mean[..., None]) ** 2, axis=-1) / (n - 1))
        sd = np.where(n > 1, sd, np.nan)
        used = np.where(np.isfinite(sd), np.fmax(sd, floor), np.nan)
        se = used / np.sqrt(n)
        df = np.maximum(n - 1, 1)
        half = sps.t.ppf(0.5 + level / 2, df) * se
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
        p = np.where(n > 1, 2 * sps.t.sf(np.abs(t), df), np.nan)
    return {"n": n, "mean": mean, "sd": sd, "sd_used": used, "se": se, "df": df, "low": mean - half,
            "high": mean + half, "p": p}


def interval(s: dict, level: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The t interval of paired()'s means at another level (one per row, or one for all)."""
    with np.errstate(invalid="ignore"):
        half = sps.t.ppf(0.5 + np.asarray(level, dtype=float) / 2, s["df"]) * s["se"]
    return s["mean"] - half, s["mean"] + half


def one_sided_p(s: dict, bound: np.ndarray | float, above: bool) -> np.ndarray:
    """p value of the one-sided t test that the mean lies above `bound` (above=True) or below it."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (s["mean"] - bound) / s["se"]
        t = np.where(np.isfinite(t), t, np.where(s["mean"] > bound, np.inf, -np.inf))
        p = sps.t.sf(t, s["df"]) if above else sps.t.cdf(t, s["df"])
    return np.where(s["n"] > 1, p, np.nan)


def tost(s: dict, margin: np.ndarray | float) -> np.ndarray:
    """Two one-sided tests of equivalence: p value that the mean lies within (-margin, +margin)."""
    return np.fmax(one_sided_p(s, -np.asarray(margin), above=True), one_sided_p(s, np.asarray(margin), above=False))


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
            out[index][ok] = sps.false_discovery_control(row[ok], method="bh")
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


def step(values: np.ndarray, most: int = 10**6) -> float:
    """The step of a score that counts images (k / n correct): 1 / L for the smallest L that makes every finite
    value a whole number of steps, L being the least common multiple of the values' denominators (at most
    `most`, such as the number of test images). L divides n, so the step is never finer than one image: a floor
    built on it errs on the safe side when the values show only some of the possible counts. Values logged in
    float32 (Keras' metrics) still count when `most` bounds the denominators. 0.0 when the values are not counts
    (a continuous score, or L above `most`); 1.0 for no finite value."""
    whole = 1
    for v in np.unique(np.asarray(values, dtype=float)):
        if not np.isfinite(v):
            continue
        f = fractions.Fraction(float(v)).limit_denominator(most)
        whole = math.lcm(whole, f.denominator)
        if abs(float(f) - v) > 1e-6 or whole > most:  # 1e-6: float32's rounding of k / n passes
            return 0.0
    return 1.0 / whole
