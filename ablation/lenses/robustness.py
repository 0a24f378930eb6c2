"""Robustness in the report: each policy's mean corruption error relative to `none` (mCE; Hendrycks and
Dietterich, ICLR 2019, with the seed's none run as the reference model in place of AlexNet), paired by seed.

For a policy run and the none run of the same dataset, model, setting and seed, per corruption c:
    CE_c = sum over severities of (1 - accuracy of the policy) / sum over severities of (1 - accuracy of none)
and mCE = the mean of CE_c over the corruptions both runs were scored on. Below 1: fewer errors under corruption
than none. Over the seeds: the geometric mean mCE with its 95% interval, a paired t interval on log(mCE) taken back
by exp. mCE is a ratio: 0.5 and 2 lie equally far from 1, it is never below 0, and its spread grows with its size,
so a t interval on the ratio itself can run below 0 and is symmetric where the data are not (an old result read
5.35 [2.78, 7.91]); on the log scale the interval is symmetric, back on the ratio scale it is asymmetric and
positive. Beside it, the change in the mean corrupted accuracy (robust/mean_accuracy) in points.

`trains on` names the corruptions whose transform family the policy itself applies (noise trained, noise
tested): Mintun et al. (2021) show that such overlap inflates robustness gains.

Plain statistics on the runs table (mlflow.search_runs' columns): no MLflow, no Keras."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ablation.core import stats
from ablation.core.names import BLOCK, KEYS
from ablation.lenses import class_effects, corruptions

COLUMN = re.compile(r"^metrics\.robust/([a-z_]+)/(\d)/accuracy$")
COLUMNS = [*KEYS, "mce", "mce_ci_low", "mce_ci_high", "delta_robust_accuracy", "trains_on"]


def _errors(row: pd.Series, columns: dict) -> dict[str, float]:
    """corruption -> the summed error over its severities (NaN when a severity is missing)."""
    return {name: float(np.sum([1 - float(row[c]) for c in cols])) for name, cols in columns.items()}


def policy_families(runs: pd.DataFrame) -> pd.Series:
    """The transform names each run's policy holds, as one text per run (its augmentation params)."""
    params = [c for c in runs.columns if c.startswith("params.augmentation.")]
    text = runs[params].fillna("").astype(str).agg(" ".join, axis=1) if params else pd.Series("", index=runs.index)
    # ImageDataGenerator's brightness_range and channel_shift_range are brightness changes of their own.
    return text.str.replace("brightness_range", "RandomBrightnessContrast").str.replace(
        "channel_shift_range", "KerasChannelShift")


def mce(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per policy of every block with a none baseline and robust/* metrics."""
    found: dict[str, list[str]] = {}
    for c in runs.columns:
        if m := COLUMN.match(c):
            found.setdefault(m.group(1), []).append(c)
    if runs.empty or not found:
        return pd.DataFrame(columns=COLUMNS)
    texts = policy_families(runs)
    rows = []
    for key, augmentation, group, base in class_effects.against_baseline(runs):
        ratios, deltas = [], []
        for _, r in group.iterrows():
            if r["seed"] not in base.index:
                continue
            b = base.loc[r["seed"]]
            mine, theirs = _errors(r, found), _errors(b, found)
            per = [mine[c] / theirs[c] for c in found if np.isfinite(mine[c]) and theirs[c] > 0]
            ratios.append(np.mean(per) if per else np.nan)
            deltas.append(100 * (float(r.get("metrics.robust/mean_accuracy", np.nan))
                                 - float(b.get("metrics.robust/mean_accuracy", np.nan))))
        # A seed whose policy makes no error at all (mCE 0) has no log: it counts as a missing seed.
        logs = np.log(np.where(np.array(ratios, dtype=float) > 0, ratios, np.nan))
        geometric = stats.paired(logs)
        text = " ".join(texts[group.index].fillna("").astype(str))
        trains_on = [c for c in found if any(t in text for t in corruptions.FAMILIES.get(c, ()))]
        rows.append({**dict(zip(BLOCK, key)), "augmentation": augmentation, "mce": np.exp(geometric["mean"][0]),
                     "mce_ci_low": np.exp(geometric["low"][0]), "mce_ci_high": np.exp(geometric["high"][0]),
                     "delta_robust_accuracy": float(np.nanmean(deltas)) if np.isfinite(deltas).any() else np.nan,
                     "trains_on": ", ".join(trains_on)})
    return pd.DataFrame(rows, columns=COLUMNS)
