"""Dose and response: the levels of a strength design (the report's `<policy>@<strength>` rows, design=strength)
as curves of delta test score and delta gap against strength, and the best level the decision rule supports.

Every level is a row of the report decided like any policy (summary.py, decide.py: paired by seed against
`none`, all levels and policies of a sweep one family for the multiplicity correction); level 0 is `none`
itself. The best supported level is the one with the highest delta test score among the levels whose verdict
is `helps`; the levels above it show whether more of the policy costs test score. Plain tables: no MLflow."""
from __future__ import annotations

import math
import re

import pandas as pd

from ablation import decide

BLOCK = ["dataset", "model", "setting"]
BASELINE = "none"
LEVEL = re.compile(r"^(?P<policy>.+)@(?P<level>\d+(?:\.\d*)?(?:e[-+]?\d+)?)(?P<offline>@offline)?$")
DELTAS = ["delta_test_score", "delta_test_score_ci_low", "delta_test_score_ci_high", "delta_gap", "delta_gap_ci_low",
          "delta_gap_ci_high"]
COLUMNS = [*BLOCK, "policy", "strength", "augmentation", "verdict", *DELTAS, "n_seeds", "score_metric",
           "gap_estimator", "best"]
NOTE = ("Each level of a policy's strength (every magnitude scaled by it; 1 = as written, 0 = none) is decided like "
        "any policy: paired by seed against none, all levels adjusted together for multiplicity. The best supported "
        "level is the one with the highest test score among the levels that help.")


def levels(table: pd.DataFrame) -> pd.DataFrame:
    """The report table's strength levels, one row per (block, policy, strength), with level 0 from the block's
    baseline; empty when the report has none."""
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
            zeros.append({**block, "strength": 0.0, "augmentation": BASELINE, "verdict": decide.BASELINE,
                          **{c: 0.0 for c in DELTAS}, "n_seeds": b["n_seeds"], "score_metric": b["score_metric"],
                          "gap_estimator": b["gap_estimator"]})
    out = pd.concat([out, pd.DataFrame(zeros)], ignore_index=True) if zeros else out
    out = out.assign(best=False).reindex(columns=COLUMNS)
    out = out.sort_values([*BLOCK, "policy", "strength"]).reset_index(drop=True)
    for _, family in out.groupby([*BLOCK, "policy"], dropna=False):
        chosen = best(family)
        if chosen is not None:
            out.loc[chosen.name, "best"] = True
    return out


def best(family: pd.DataFrame) -> pd.Series | None:
    """The level of one policy the decision rule supports best: the highest delta test score among `helps`."""
    helping = family[family["verdict"] == decide.HELPS]
    if helping.empty:
        return None
    return helping.sort_values(["delta_test_score", "strength"], ascending=[False, True]).iloc[0]


def lines(doses: pd.DataFrame) -> list[str]:
    """One line per policy: its best supported level and what the levels above it do to the test score."""
    out = []
    several = doses[BLOCK].astype(str).drop_duplicates().shape[0] > 1
    for key, family in doses.groupby([*BLOCK, "policy"], dropna=False, sort=False):
        where = " on " + "/".join(str(k) for k in key[:3] if str(k)) if several else ""
        name, metric = key[3], family["score_metric"].iloc[0]
        chosen = best(family)
        if chosen is None:
            shown = ", ".join(f"{s:g}: {v}" for s, v in zip(family["strength"], family["verdict"]) if s)
            out.append(f"{name}{where}: no level helps by the decision rule ({shown})")
            continue
        text = (f"{name}{where}: best supported level {chosen['strength']:g} (delta test {metric} "
                f"{_interval(chosen, 'delta_test_score')}, delta gap {_interval(chosen, 'delta_gap')})")
        above = family[family["strength"] > chosen["strength"]]
        if len(above):
            text += "; above it: " + ", ".join(f"{s:g} {_interval(r, 'delta_test_score')} ({r['verdict']})"
                                               for s, (_, r) in zip(above["strength"], above.iterrows()))
        out.append(text)
    return out


def _interval(r, prefix: str) -> str:
    mean, low, high = (float(r[prefix]), float(r[f"{prefix}_ci_low"]), float(r[f"{prefix}_ci_high"]))
    if not math.isfinite(low):
        return f"{mean:+.3f}"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
