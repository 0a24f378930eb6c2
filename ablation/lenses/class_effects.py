"""Per-class effects: which classes a policy helps or hurts, against `none` of the same dataset, model and
setting, paired by seed. For every policy and class, the paired differences of the class's test accuracy
(ablation.lenses.per_class logs it per run) give a mean in points with its 95% t interval and a p value
(ablation.core.stats.paired); the p values of every cell of the report (all policies x classes) are one family,
adjusted by Benjamini-Hochberg. A cell is significant when its adjusted p value is below report.alpha.

A class's accuracy moves in steps of one of its test images (1/36 of a 36-image class: 2.8 points), so three seeds
that each get one image fewer right differ by the very same amount, their spread is zero and a plain t test calls
that p = 0 (5e-13 after rounding). The spread is floored at one image of the class (stats.paired's floor), so such
a cell decides nothing by itself (p = 0.23 at 3 seeds). The runs table holds no per-class image count (it is in
each run's per_class.csv artifact, which the report does not read), so the step is read off the accuracies
themselves: k/n correct is a whole number of steps 1/n, and the least common multiple of the denominators of the
values one seed's runs show (stats.step) divides that seed's n, so the floor is never finer than one image. It is
inferred per seed because the split follows the seed (dataset.split_seed: ${seed}), so a class may hold 36 test
images under one seed and 35 under another: pooling both would infer a step of 1/1260. The cell's floor is the
finest step of its seeds. Rows of a block whose values show only a few counts give a coarser step, which errs on
the side of calling nothing (a sign-flip test was the alternative: exact, but at 3-5 seeds its smallest p value,
0.25-0.06, can never pass the correction over 10+ classes, even for a large and consistent drop).

Plain statistics on the runs table (mlflow.search_runs' columns): no MLflow, no Keras."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ablation.core import stats
from ablation.core.names import BASELINE, BLOCK, KEYS

COLUMN = re.compile(r"^metrics\.test_class/(.+)/accuracy$")
COLUMNS = [*KEYS, "class", "n_seeds", "delta_points", "ci_low", "ci_high", "floor_points", "p", "p_adjusted",
           "significant"]


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
    for key, block in runs.groupby(BLOCK, dropna=False):
        floor = floors(block, columns)
        for _, augmentation, group, base in against_baseline(block):
            group = group.set_index("seed")
            seeds = sorted(set(group.index) & set(base.index))
            for name, column in columns.items():
                d = (group.loc[seeds, column].astype(float) - base.loc[seeds, column].astype(float)).to_numpy() * 100
                if not np.isfinite(d).any():
                    continue
                cell = stats.paired(d, floor[name])
                rows.append({**dict(zip(BLOCK, key)), "augmentation": augmentation, "class": name,
                             "n_seeds": int(cell["n"][0]), "delta_points": cell["mean"][0], "ci_low": cell["low"][0],
                             "ci_high": cell["high"][0], "floor_points": floor[name], "p": cell["p"][0]})
    out = pd.DataFrame(rows, columns=COLUMNS[:-2])
    out["p_adjusted"] = stats.adjust(out["p"].to_numpy()[None], "bh")[0] if len(out) else []
    out["significant"] = out["p_adjusted"] < alpha
    return out[COLUMNS]


def floors(block: pd.DataFrame, columns: dict[str, str]) -> dict[str, float]:
    """class -> one test image of that class in points, as the block's runs show it: per seed, the step of the
    class's accuracies over all the block's runs of that seed (stats.step, bounded by the seed's logged number of
    test images), then the finest over the seeds; 0 for a score that is not a count."""
    n_test = block["metrics.data/n_test"].astype(float) if "metrics.data/n_test" in block else None
    out = {}
    for name, column in columns.items():
        steps = [stats.step(values, _most(n_test, values.index)) for _, values in
                 block[column].astype(float).groupby(block["seed"])]
        out[name] = 100 * min(steps) if steps else 0.0
    return out


def _most(n_test: pd.Series | None, index) -> int:
    """The most images a class of these runs can have: their test split's size when logged."""
    n = n_test.loc[index].max() if n_test is not None else np.nan
    return int(n) if np.isfinite(n) and n >= 1 else 10**6
