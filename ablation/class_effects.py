"""Per-class effects: which classes a policy helps or hurts, against `none` of the same dataset, model and
setting, paired by seed. For every policy and class, the paired differences of the class's test accuracy
(ablation.per_class logs it per run) give a mean in points with its 95% t interval and a p value (decide.paired);
the p values of every cell of the report (all policies x classes) are one family, adjusted by Benjamini-Hochberg.
A cell is significant when its adjusted p value is below report.alpha.

Plain statistics on the runs table (mlflow.search_runs' columns): no MLflow, no Keras."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ablation import decide

COLUMN = re.compile(r"^metrics\.test_class/(.+)/accuracy$")
KEYS = ["dataset", "model", "setting", "augmentation"]
BLOCK = ["dataset", "model", "setting"]
BASELINE = "none"
COLUMNS = [*KEYS, "class", "n_seeds", "delta_points", "ci_low", "ci_high", "p", "p_adjusted", "significant"]


def class_columns(runs: pd.DataFrame) -> dict[str, str]:
    """class name -> the runs table's column holding its test accuracy, in the classes' natural order."""
    found = {m.group(1): c for c in runs.columns if (m := COLUMN.match(c))}
    return dict(sorted(found.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0, kv[0])))


def against_baseline(runs: pd.DataFrame):
    """(block key, policy, its runs, the block's none runs indexed by seed) for every policy of every block
    (dataset, model, setting) that has a `none`."""
    for key, block in runs.groupby(BLOCK, dropna=False):
        base = block[block["augmentation"] == BASELINE].set_index("seed")
        if base.empty:
            continue
        for augmentation, group in block[block["augmentation"] != BASELINE].groupby("augmentation"):
            yield key, augmentation, group, base


def effects(runs: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per policy and class of every block with a `none` baseline (classifiers only)."""
    columns = class_columns(runs)
    if runs.empty or not columns:
        return pd.DataFrame(columns=COLUMNS)
    if "task" in runs:
        runs = runs[runs["task"].fillna("classify").isin(["classify", "", None])]
    rows = []
    for key, augmentation, group, base in against_baseline(runs):
        group = group.set_index("seed")
        seeds = sorted(set(group.index) & set(base.index))
        for name, column in columns.items():
            d = (group.loc[seeds, column].astype(float) - base.loc[seeds, column].astype(float)).to_numpy() * 100
            if not np.isfinite(d).any():
                continue
            stats = decide.paired(d)
            rows.append({**dict(zip(BLOCK, key)), "augmentation": augmentation, "class": name,
                         "n_seeds": int(stats["n"][0]), "delta_points": stats["mean"][0],
                         "ci_low": stats["low"][0], "ci_high": stats["high"][0], "p": stats["p"][0]})
    out = pd.DataFrame(rows, columns=COLUMNS[:-2])
    out["p_adjusted"] = decide.adjust(out["p"].to_numpy()[None], "bh")[0] if len(out) else []
    out["significant"] = out["p_adjusted"] < alpha
    return out[COLUMNS]


def harm_lines(effect_table: pd.DataFrame, summary_table: pd.DataFrame) -> list[str]:
    """For each policy that significantly hurts some class: its verdict, then the classes it hurts, worst first.
    A policy that helps on average reads `helps overall, hurts class 6 (-4.2 points [-6.1, -2.3])`."""
    if effect_table.empty:
        return []
    verdicts = {tuple(r[k] for k in KEYS): r["verdict"] for _, r in summary_table.iterrows()} if len(summary_table) else {}
    lines = []
    hurt = effect_table[effect_table["significant"].astype(bool) & (effect_table["delta_points"] < 0)]
    several_blocks = effect_table[BLOCK].astype(str).drop_duplicates().shape[0] > 1
    for key, group in hurt.groupby(KEYS, dropna=False, sort=False):
        verdict = verdicts.get(tuple(key), "")
        overall = "helps overall" if verdict == decide.HELPS else f"verdict {verdict}" if verdict else "overall"
        classes = ", ".join(f"class {r['class']} ({r['delta_points']:+.1f} points [{r['ci_low']:+.1f}, "
                            f"{r['ci_high']:+.1f}])" for _, r in group.sort_values("delta_points").iterrows())
        where = f" ({key[0]}, {key[1]}{', ' + key[2] if key[2] else ''})" if several_blocks else ""
        lines.append(f"{key[3]}{where}: {overall}, hurts {classes}")
    return lines
