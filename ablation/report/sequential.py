"""Seeds on demand: the statistics of a sequential seed design (docs/decision.md, "Sequential seeds").

A sweep starts every policy and the baseline at a few seeds, decides, and adds seeds only to the policies whose
verdict is still open, in rounds, until each is decided or has the maximum; the baseline runs every seed any policy
runs, so every difference stays paired. Looking after each round and adding seeds to what is still open is optional
stopping, so each look gets its own share of alpha:

- the looks are planned in advance (looks(): 3, 5, 7 and 10 seeds by default);
- an alpha-spending function (Lan and DeMets 1983) gives each look k its increment alpha_k, the increments
  summing to alpha (spending(): O'Brien-Fleming-type by default, 2 - 2 Phi(z_(1 - alpha/2) / sqrt(t)) at
  information time t = seeds / maximum; Pocock-type alpha ln(1 + (e - 1) t) as the alternative);
- look k runs the report's own rule, decide.decide, at alpha = alpha_k over the whole family of the sweep. A row
  stopped at an earlier look stays in the family as a placeholder no test can reject, so the family is the planned
  one: by the corrections' monotonicity (Benjamini-Hochberg's and Holm's rejections only shrink when a p value
  grows), the open rows' effect verdicts at look k are a subset of those a fixed-sample decision of every row at
  look k's seeds would give, whose error rate is at most alpha_k.

By the union bound over the looks, the chance of any false effect verdict over the whole sequence is at most
sum(alpha_k) = alpha, whatever the data-dependent stopping (a row that stops only removes chances). The intervals
at level 1 - alpha_k each look shows are repeated confidence intervals (Jennison and Turnbull 1989): for each row
and endpoint they cover the true difference at every look at once with probability at least 1 - alpha, so the
ones shown at the look a row stopped at are valid whatever made it stop.

A row stops when its verdict is decided (`helps`, `equivalent`, `widens gap`, `hurts`, `regularizes, costs
accuracy`); when its training is unfinished or a run failed (more seeds cannot fix either); or at the maximum.
`undecided` and `gap lower, cost unclear` stay open. A stopped row is final: its verdict and intervals are those
of the look it stopped at, never decided again. Arrays as in decide.py: rows = the policies of one baseline,
columns = seeds in the order they run, leading axes = independent sweeps, NaN = a missing seed."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ablation.core import stats
from ablation.report import decide

SPENDING = ("obrien-fleming", "pocock")
# The default spending (docs/decision.md, "Sequential seeds"): at 3 seeds a t test has 2 degrees of freedom and, at a
# level a family of policies can afford, decides almost nothing, so alpha spent there is mostly lost; O'Brien-
# Fleming-type spending keeps it for the later looks and loses little power against the fixed 10-seed design.
KIND = "obrien-fleming"
OPEN_VERDICTS = (decide.UNDECIDED, decide.COST_UNCLEAR)
# Why a row stopped (or that it did not).
OPEN, DECIDED, UNFINISHED, FAILED, MAXIMUM = "open", "decided", "unfinished: train longer", "failed runs", "at the maximum"
# A stopped row's stand-in at later looks: differences of mean exactly 0 and a spread no margin is near. Its t tests
# give p = 1 and its equivalence tests p = 0.5, above any level a family uses, so it is never rejected and never
# moves an open row's rejection; it only keeps the family's size the planned one.
PLACEHOLDER = (1e12, -1e12)


@dataclass(frozen=True)
class Schedule:
    """The planned looks: the seed count of each and the alpha it spends."""
    seeds: tuple[int, ...]
    alphas: tuple[float, ...]
    kind: str = KIND

    @property
    def maximum(self) -> int:
        return self.seeds[-1]

    @property
    def alpha(self) -> float:
        return float(sum(self.alphas))


def looks(start: int = 3, maximum: int = 10, step: int = 2) -> tuple[int, ...]:
    """The seed counts at which a sweep looks: start, start + step, ... and the maximum; the last round adds
    between step and 2 step - 1 seeds (never a look that spends alpha on fewer new seeds than step). (3, 5, 7, 10)
    by default."""
    if not 2 <= start <= maximum or step < 1:
        raise ValueError(f"sequential looks: expected 2 <= start <= maximum and step >= 1, got start={start}, "
                         f"maximum={maximum}, step={step}")
    counts = list(range(start, maximum - step + 1, step)) or [start]
    return tuple(counts + [maximum]) if counts[-1] != maximum else tuple(counts)


def spent(t: np.ndarray | float, alpha: float = 0.05, kind: str = KIND) -> np.ndarray:
    """The alpha spent by information time t (seeds / maximum): Lan-DeMets' Pocock-type alpha ln(1 + (e - 1) t),
    or O'Brien-Fleming-type 2 - 2 Phi(z_(1 - alpha/2) / sqrt(t)). Both are alpha at t = 1."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if kind == "pocock":
        return alpha * np.log1p((math.e - 1) * t)
    if kind == "obrien-fleming":
        with np.errstate(divide="ignore"):
            return np.where(t > 0, 2 * sps.norm.sf(sps.norm.isf(alpha / 2) / np.sqrt(t)), 0.0)
    raise ValueError(f"sequential spending: expected one of {'|'.join(SPENDING)}, got {kind!r}")


def spending(seeds: tuple[int, ...], alpha: float = 0.05, kind: str = KIND) -> tuple[float, ...]:
    """Each look's alpha: the increments of spent() at t = seeds / maximum, summing to alpha."""
    cumulative = spent(np.asarray(seeds, dtype=float) / seeds[-1], alpha, kind)
    cumulative[-1] = alpha  # exactly, whatever the rounding
    return tuple(float(a) for a in np.diff(np.r_[0.0, cumulative]))


def schedule(start: int = 3, maximum: int = 10, step: int = 2, alpha: float = 0.05, kind: str = KIND) -> Schedule:
    """The default design: looks(start, maximum, step) with spending(..., alpha, kind)."""
    seeds = looks(start, maximum, step)
    return Schedule(seeds, spending(seeds, alpha, kind), kind)


def look(d_gap, d_score, k: int, plan: Schedule, active=None, **decide_kwargs) -> dict[str, np.ndarray]:
    """Look k (0-based) of a plan: decide.decide over the first plan.seeds[k] seeds at alpha = plan.alphas[k].

    d_gap, d_score: (..., rows, seeds) differences with at least plan.seeds[k] columns (more are ignored). active:
    the rows still open before this look (default: all); the others enter the family as placeholders and their
    verdicts here mean nothing. decide_kwargs: decide's correction, margin, score_floor, gap_margin and this look's
    failed, total and unfinished. Returns decide's dict plus: open (rows that get more seeds), reason (OPEN,
    DECIDED, UNFINISHED, FAILED or MAXIMUM; "" for rows not active), alpha, seeds, and the repeated confidence
    intervals gap_rci and score_rci ((low, high) at level 1 - alpha_k)."""
    n, alpha = plan.seeds[k], plan.alphas[k]
    d_gap = np.asarray(d_gap, dtype=float)[..., :n]
    d_score = np.asarray(d_score, dtype=float)[..., :n]
    if d_gap.shape[-1] < n:
        raise ValueError(f"sequential look {k}: expected at least {n} seeds per row, got {d_gap.shape[-1]}")
    active = np.ones(d_gap.shape[:-1], dtype=bool) if active is None else np.asarray(active, dtype=bool)
    if not active.all():
        stand_in = np.full(n, np.nan)
        stand_in[:2] = PLACEHOLDER
        d_gap = np.where(active[..., None], d_gap, stand_in)
        d_score = np.where(active[..., None], d_score, stand_in)
    out = decide.decide(d_gap, d_score, alpha=alpha, **decide_kwargs)
    verdict = out["verdict"]
    undecided = np.isin(verdict, OPEN_VERDICTS)
    reason = np.select([~active, verdict == decide.UNFINISHED, np.char.startswith(verdict, "undecided: "),
                        undecided & (n >= plan.maximum), undecided], ["", UNFINISHED, FAILED, MAXIMUM, OPEN],
                       DECIDED)
    return {**out, "open": active & (reason == OPEN), "reason": reason, "alpha": alpha, "seeds": n,
            "gap_rci": stats.interval(out["gap"], 1 - alpha),
            "score_rci": stats.interval(out["score"], 1 - alpha)}


# What run() keeps of the look each row stopped at.
KEPT = ("verdict", "reason", "gap_mean", "score_mean", "gap_rci_low", "gap_rci_high", "score_rci_low",
        "score_rci_high", "score_ni_low", "score_ni_high")


def _kept(out: dict) -> dict[str, np.ndarray]:
    return {"verdict": out["verdict"], "reason": out["reason"], "gap_mean": out["gap"]["mean"],
            "score_mean": out["score"]["mean"], "gap_rci_low": out["gap_rci"][0], "gap_rci_high": out["gap_rci"][1],
            "score_rci_low": out["score_rci"][0], "score_rci_high": out["score_rci"][1],
            "score_ni_low": out["score_ni_low"], "score_ni_high": out["score_ni_high"]}


def run(d_gap, d_score, plan: Schedule, failed=None, unfinished=None, **decide_kwargs) -> dict[str, np.ndarray]:
    """A whole sequence over full differences (..., rows, plan.maximum): what the sweep would have run and said.

    failed, unfinished: per run booleans of the same shape (a failed run; a run whose training was unfinished), or
    None. At each look a row counts its failed runs among the seeds it ran (`undecided: k/N runs failed`) and is
    unfinished when at least half of its runs so far are (as the report flags it). decide_kwargs: decide's
    correction, margin, score_floor and gap_margin. Returns, per row: KEPT from the look it stopped at, look (the
    0-based look it stopped at) and seeds (the seeds it ran); per sweep: baseline_seeds (the most any row ran) and
    runs (the baseline's plus every row's)."""
    d_gap, d_score = np.asarray(d_gap, dtype=float), np.asarray(d_score, dtype=float)
    shape = d_gap.shape[:-1]
    if d_gap.shape[-1] < plan.maximum:
        raise ValueError(f"sequential run: expected {plan.maximum} seeds per row, got {d_gap.shape[-1]}")
    active = np.ones(shape, dtype=bool)
    stopped_at = np.full(shape, len(plan.seeds) - 1)
    kept: dict[str, np.ndarray] = {}
    for k, n in enumerate(plan.seeds):
        kwargs = dict(decide_kwargs)
        ran = np.isfinite(d_gap[..., :n]) | np.isfinite(d_score[..., :n])
        if failed is not None:
            kwargs.update(failed=np.asarray(failed, dtype=bool)[..., :n].sum(axis=-1), total=n)
        if unfinished is not None:
            late = (np.asarray(unfinished, dtype=bool)[..., :n] & ran).sum(axis=-1)
            kwargs["unfinished"] = (late > 0) & (2 * late >= ran.sum(axis=-1))
        decision = look(d_gap, d_score, k, plan, active, **kwargs)
        stopping = active & ~decision["open"]
        out = _kept(decision)
        if not kept:
            kept = {name: np.array(value, dtype=object if name in ("verdict", "reason") else float)
                    for name, value in out.items()}
        else:
            for name, value in out.items():
                kept[name] = np.where(stopping, value, kept[name])
        stopped_at = np.where(stopping, k, stopped_at)
        active &= ~stopping
        if not active.any():
            break
    seeds = np.asarray(plan.seeds)[stopped_at]
    baseline = seeds.max(axis=-1)
    kept["verdict"], kept["reason"] = kept["verdict"].astype(str), kept["reason"].astype(str)
    return {**kept, "look": stopped_at, "seeds": seeds, "baseline_seeds": baseline, "runs": baseline + seeds.sum(-1)}



def shown_intervals(table) -> tuple[str, str]:
    """Which intervals a report table shows, as (column infix, label): in a sequential sweep's table (a `look`
    column with values) each row's repeated confidence interval at the look it stopped at, the one valid whatever
    made it stop ("rci"); otherwise the raw 95% intervals ("ci")."""
    import pandas as pd

    if "look" in table and pd.to_numeric(table["look"], errors="coerce").notna().any():
        return "rci", "intervals at the look each policy stopped at"
    return "ci", "raw 95% intervals"
