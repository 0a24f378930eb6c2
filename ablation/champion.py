"""The run a sweep registers (tracking.register_model=NAME), chosen by the report's own decision rule rather than
by the top test score: a policy that wins on test score by seed noise is not recommended, so it is not shipped.

    policy  the one the report recommends: verdict `helps` with the highest delta test score against none;
            when no policy helps, `none` (no augmentation), said so
    run     among that policy's seeds, the one with the best test score

Pure pandas over the report's table (summary.csv) and its finished runs (report.runs_of); register() hands the
choice to the Model Registry."""
from __future__ import annotations

import logging

import pandas as pd

from ablation import decide, summary, tracking
from ablation.errors import ConfigError

log = logging.getLogger(__name__)



def choose(table: pd.DataFrame, finished: pd.DataFrame) -> dict:
    """{"run_id", "run_name", "augmentation", "seed", "metric", "score", "verdict", "reason"} of the run to
    register. When the sweep covers several datasets, models or settings, the one policy with the highest delta
    test score over all of them wins (and among the baselines, the best mean test score)."""
    helps = table[table["verdict"] == decide.HELPS]
    if len(helps):
        row = helps.sort_values("delta_test_score", ascending=False, kind="stable").iloc[0]
        why = (f"policy {row['augmentation']}: verdict {decide.HELPS}, the highest delta test {row['score_metric']} "
               f"against none among the {len(helps)} polic{'y' if len(helps) == 1 else 'ies'} that help "
               f"({row['delta_test_score']:+.4f})")
    else:
        base = table[table["augmentation"] == summary.BASELINE]
        if base.empty:
            raise ConfigError("tracking.register_model: no policy helps and the sweep has no `none` runs to fall "
                              "back on; nothing registered")
        row = base.sort_values("test_score_mean", ascending=False, kind="stable").iloc[0]
        verdicts = ", ".join(f"{a}: {v}" for a, v in zip(table["augmentation"], table["verdict"])
                             if a != summary.BASELINE)
        why = (f"no policy helps ({verdicts or 'no policies'}), so none (no augmentation), the baseline the "
               "report keeps")
    wanted = summary.key_text(row.to_frame().T).iloc[0]
    runs = finished[(summary.key_text(finished) == wanted).all(axis=1)]
    metric = f"metrics.test/{row['score_metric']}"
    if runs.empty or metric not in runs:
        raise ConfigError(f"tracking.register_model: no finished run of {row['augmentation']} with a test "
                          f"{row['score_metric']}; nothing registered")
    best = runs.assign(_score=runs[metric].astype(float)).sort_values("_score", ascending=False,
                                                                       kind="stable").iloc[0]
    seed = best["seed"]
    why += (f"; its seed {seed} has the best test {row['score_metric']} of its {len(runs)} seed"
            f"{'' if len(runs) == 1 else 's'} ({best['_score']:.4f})")
    return {"run_id": best["run_id"], "run_name": best.get("tags.mlflow.runName", ""),
            "augmentation": row["augmentation"], "seed": seed, "metric": row["score_metric"],
            "score": float(best["_score"]), "verdict": row["verdict"], "reason": why}


def register(tracking_cfg, name: str, table: pd.DataFrame, finished: pd.DataFrame) -> dict:
    """Register the chosen run's MLflow Model as a new version of `name`; returns the choice with `version` and
    `new` (False when the newest version already held it)."""
    pick = choose(table, finished)
    version, pick["new"] = tracking.register_model(tracking_cfg, pick["run_id"], name, description=pick["reason"],
                                      tags={"augmentation": pick["augmentation"], "seed": pick["seed"],
                                            "verdict": pick["verdict"], f"test_{pick['metric']}": pick["score"]})
    pick["version"] = version.version
    return pick
