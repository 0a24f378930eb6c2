"""Dose and response: the levels of a strength design (the report's `<policy>@<strength>` rows, design=strength)
as curves of delta test score and delta gap against strength, and the levels the decision rule supports.

Every level is a row of the report decided like any policy (summary.py, decide.py: paired by seed against
`none`, all levels and policies of a sweep one family for the multiplicity correction); level 0 is `none`
itself. The best point estimate is the level with the highest delta test score among the levels whose verdict is
`helps`. Naming it alone would pick among levels that seed noise cannot order: the top of several close
estimates is mostly the luckiest. So the report names the set of levels that help and cannot be told apart from
it: a level is in the set when its verdict is `helps` and a paired t test over the seeds (level minus best, its
accuracy spread floored at one test image, ablation/core/stats.py) does not show it worse at ALPHA (two-sided, no
correction: the set errs on the side of keeping a level). Without the runs, a level is in the set when its delta
test score interval reaches the best's (overlapping 95% intervals: a looser, interval-only screen). The levels
above the set show whether more of the policy costs test score. Plain tables: no MLflow."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ablation.core import stats
from ablation.core.names import BASELINE, BLOCK
from ablation.report import decide

ALPHA = 0.05  # a level is told apart from the best when the paired test puts it lower at this level
LEVEL = re.compile(r"^(?P<policy>.+)@(?P<level>\d+(?:\.\d*)?(?:e[-+]?\d+)?)(?P<offline>@offline)?$")
DELTAS = ["delta_test_score", "delta_test_score_ci_low", "delta_test_score_ci_high", "delta_gap", "delta_gap_ci_low",
          "delta_gap_ci_high"]
COLUMNS = [*BLOCK, "policy", "strength", "augmentation", "verdict", *DELTAS, "n_seeds", "score_metric",
           "score_step", "gap_estimator", "best", "supported", "p_vs_best"]
# Units of the report table's delta test score (decide.py: accuracy in points, PSNR in dB) and of the runs' own
# test metrics (accuracy logged as a share of 1), and the digits each is shown with.
UNITS = {"accuracy": ("points", 1), "psnr": ("dB", 2)}
RUN_SCALE = {"accuracy": 100.0}
NOTE = ("Each level of a policy's strength (every magnitude scaled by it; 1 = as written, 0 = none) is decided like "
        "any policy: paired by seed against none, all levels adjusted together for multiplicity. The best point "
        "estimate is the level with the highest test score among the levels that help; the levels named with it "
        f"also help and a paired test over the seeds does not show them worse than it (p >= {ALPHA:g}), so seed "
        "noise cannot order them.")


def levels(table: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The report table's strength levels, one row per (block, policy, strength), with level 0 from the block's
    baseline; empty when the report has none. `runs`: one row per finished run with dataset, model, setting,
    augmentation, seed and metrics.test/<score metric> (report.runs_of's finished runs, or summary.per_run's
    table), for the paired test of each level against the best; without it, intervals decide the set."""
    rows = []
    for _, r in table.iterrows():
        match = LEVEL.match(str(r["augmentation"]))
        if match:
            rows.append({**{k: r.get(k, "") for k in COLUMNS if k in r}, "policy": match["policy"]
                         + (match["offline"] or ""), "strength": float(match["level"])})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.DataFrame(rows)
    zeros = []
    for key, family in out.groupby([*BLOCK, "policy"], dropna=False):
        block = dict(zip([*BLOCK, "policy"], key))
        base = table[(table["augmentation"] == BASELINE)
                     & (table[BLOCK].astype(str) == pd.Series({k: str(block[k]) for k in BLOCK})).all(axis=1)]
        if len(base) and not (family["strength"] == 0).any():
            b = base.iloc[0]
            zeros.append({**block, "strength": 0.0, "augmentation": BASELINE, "verdict": decide.BASELINE_ROW,
                          **{c: 0.0 for c in DELTAS}, "n_seeds": b["n_seeds"], "score_metric": b["score_metric"],
                          "gap_estimator": b["gap_estimator"]})
    out = pd.concat([out, pd.DataFrame(zeros)], ignore_index=True) if zeros else out
    out = out.assign(best=False, supported=False, p_vs_best=math.nan).reindex(columns=COLUMNS)
    out = out.sort_values([*BLOCK, "policy", "strength"]).reset_index(drop=True)
    for _, family in out.groupby([*BLOCK, "policy"], dropna=False):
        chosen = best(family)
        if chosen is None:
            continue
        out.loc[chosen.name, ["best", "supported"]] = True
        for index, r in family[(family["verdict"] == decide.HELPS) & (family.index != chosen.name)].iterrows():
            p, mean = _versus(runs, r, chosen)
            out.loc[index, "p_vs_best"] = p
            if math.isfinite(p):  # the paired test: in the set unless shown worse
                out.loc[index, "supported"] = not (p < ALPHA and mean < 0)
            else:  # no runs for it: the intervals overlap
                out.loc[index, "supported"] = float(r["delta_test_score_ci_high"]) >= float(
                    chosen["delta_test_score_ci_low"])
    return out


def best(family: pd.DataFrame) -> pd.Series | None:
    """The best point estimate among one policy's levels: the highest delta test score among `helps`."""
    helping = family[family["verdict"] == decide.HELPS]
    if helping.empty:
        return None
    return helping.sort_values(["delta_test_score", "strength"], ascending=[False, True]).iloc[0]


def _versus(runs: pd.DataFrame | None, level: pd.Series, chosen: pd.Series) -> tuple[float, float]:
    """(two-sided p, mean) of the paired t test of a level's test score minus the best level's over the seeds
    both ran, in the table's units, the spread of an accuracy floored at one test image; NaN without runs."""
    metric = str(level["score_metric"])
    column = f"metrics.test/{metric}"
    if runs is None or runs.empty or column not in runs:
        return math.nan, math.nan
    text = runs[BLOCK].astype(object).where(runs[BLOCK].notna(), "").astype(str)
    mine = runs[(text == pd.Series({k: str(level[k]) if pd.notna(level[k]) else "" for k in BLOCK})).all(axis=1)]
    scores = mine[mine["augmentation"].isin([level["augmentation"], chosen["augmentation"]])].pivot_table(
        index="seed", columns="augmentation", values=column, aggfunc="mean")
    if level["augmentation"] not in scores or chosen["augmentation"] not in scores:
        return math.nan, math.nan
    scores = scores[[level["augmentation"], chosen["augmentation"]]].dropna().astype(float)
    if len(scores) < 2:
        return math.nan, math.nan
    scale = RUN_SCALE.get(metric, 1.0)
    s = stats.paired((scores.iloc[:, 0] - scores.iloc[:, 1]).to_numpy() * scale, _floor(level, scores, scale))
    return float(s["p"][0]), float(s["mean"][0])


def _floor(level: pd.Series, scores: pd.DataFrame, scale: float) -> float:
    """One test image in the table's unit: the report table's score_step (summary.per_run, from the logged
    split size); a table written before it had one reads it off the two levels' accuracies per seed
    (stats.step), the finest over the seeds. 0 for a continuous score."""
    step = pd.to_numeric(pd.Series([level.get("score_step")]), errors="coerce").iloc[0]
    if np.isfinite(step):
        return float(step)
    if str(level["score_metric"]) != "accuracy":
        return 0.0
    return scale * min(stats.step(row) for _, row in scores.iterrows())


def lines(doses: pd.DataFrame) -> list[str]:
    """One line per policy: the levels that help and cannot be told apart from the best point estimate, and what
    the levels above them do to the test score."""
    out = []
    several = doses[BLOCK].astype(str).drop_duplicates().shape[0] > 1
    for key, family in doses.groupby([*BLOCK, "policy"], dropna=False, sort=False):
        where = " on " + "/".join(str(k) for k in key[:3] if str(k)) if several else ""
        name, metric = key[3], str(family["score_metric"].iloc[0])
        chosen = best(family)
        if chosen is None:
            shown = ", ".join(f"{s:g}: {v}" for s, v in zip(family["strength"], family["verdict"]) if s)
            out.append(f"{name}{where}: no level helps by the decision rule ({shown})")
            continue
        kept = family[family["supported"].astype(bool)]
        told = family[(family["verdict"] == decide.HELPS) & ~family["supported"].astype(bool)]
        estimate = f"{chosen['strength']:g}: {_interval(chosen, metric)}"
        if len(kept) > 1:
            text = (f"{name}{where}: levels {_and(kept['strength'])} help and cannot be told apart (best point "
                    f"estimate {estimate})")
        else:
            text = f"{name}{where}: best supported level {estimate}"
        if len(told):
            how = "a paired test" if told["p_vs_best"].notna().all() else "their intervals"
            text += f"; {_and(told['strength'])} also help{'s' if len(told) == 1 else ''} but less, by {how}"
        above = family[family["strength"] > kept["strength"].max()]
        above = above[~above.index.isin(told.index)]
        if len(above):
            text += "; above: " + ", ".join(f"{r['strength']:g} {_interval(r, metric)} ({r['verdict']})"
                                            for _, r in above.iterrows())
        out.append(text)
    return out


def _and(strengths) -> str:
    """0.5, 1 and 2."""
    names = [f"{s:g}" for s in strengths]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _interval(r, metric: str) -> str:
    """The delta test score with its interval, in the table's units: `+1.4 points [+0.6, +2.1]`."""
    unit, digits = UNITS.get(metric, ("", 3))
    mean, low, high = (float(r[c]) for c in ("delta_test_score", "delta_test_score_ci_low",
                                              "delta_test_score_ci_high"))
    unit = f" {unit}" if unit else ""
    if not math.isfinite(low):
        return f"{mean:+.{digits}f}{unit}"
    return f"{mean:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]"
