"""The run a sweep registers (tracking.register_model=NAME), chosen by the report's own decision rule rather than
by the top test score: a policy that wins on test score by seed noise is not recommended, so it is not shipped.

    policy  the one the report recommends: verdict `helps` with the highest delta test score against none;
            when no policy helps, `none` (no augmentation), said so
    run     among that policy's seeds, the one with the best validation score (best/val_<score metric>, the
            score at the epoch whose weights were kept; the lowest best/val_loss where that is not logged)

The run is chosen on validation, not on test: the seed with the top test score is the luckiest draw on the very
images that measure it, so its test score overstates what the shipped model does on new data, and picking by it
spends the test split on a selection. The version is tagged with the policy's mean test score over its seeds, the
estimate the report's decision stands on; the chosen seed's own test score stays in its run.

Pure pandas over the report's table (summary.csv) and its finished runs (report.runs_of); register() hands the
choice to the Model Registry."""
from __future__ import annotations

import logging
import math

import pandas as pd

from ablation import tracking
from ablation.core.errors import ConfigError
from ablation.core.names import BASELINE
from ablation.report import decide, summary

log = logging.getLogger(__name__)



def choose(table: pd.DataFrame, finished: pd.DataFrame) -> dict:
    """{"run_id", "run_name", "augmentation", "seed", "metric", "score", "n_seeds", "val_metric", "val_score",
    "verdict", "reason"} of the run to register: `score` is the policy's mean test score over its seeds,
    `val_score` the chosen run's validation score (`val_metric`: best/val_<metric> or best/val_loss). When the
    sweep covers several datasets, models or settings, the one policy with the highest delta test score over all
    of them wins (and among the baselines, the best mean test score)."""
    helps = table[table["verdict"] == decide.HELPS]
    if len(helps):
        row = helps.sort_values("delta_test_score", ascending=False, kind="stable").iloc[0]
        why = (f"policy {row['augmentation']}: verdict {decide.HELPS}, the highest delta test {row['score_metric']} "
               f"against none among the {len(helps)} polic{'y' if len(helps) == 1 else 'ies'} that help "
               f"({row['delta_test_score']:+.4f})")
    else:
        base = table[table["augmentation"] == BASELINE]
        if base.empty:
            raise ConfigError("tracking.register_model: no policy helps and the sweep has no `none` runs to fall "
                              "back on; nothing registered")
        row = base.sort_values("test_score_mean", ascending=False, kind="stable").iloc[0]
        verdicts = ", ".join(f"{a}: {v}" for a, v in zip(table["augmentation"], table["verdict"])
                             if a != BASELINE)
        why = (f"no policy helps ({verdicts or 'no policies'}), so none (no augmentation), the baseline the "
               "report keeps")
    wanted = summary.key_text(row.to_frame().T).iloc[0]
    runs = finished[(summary.key_text(finished) == wanted).all(axis=1)]
    metric = f"metrics.test/{row['score_metric']}"
    if runs.empty or metric not in runs:
        raise ConfigError(f"tracking.register_model: no finished run of {row['augmentation']} with a test "
                          f"{row['score_metric']}; nothing registered")
    mean = float(runs[metric].astype(float).mean())
    chosen, val_metric = _by_validation(runs, row["score_metric"])
    seed, seeds = chosen["seed"], f"{len(runs)} seed{'' if len(runs) == 1 else 's'}"
    val_score = float(chosen[f"metrics.{val_metric}"]) if val_metric else math.nan
    why += (f"; its seed {seed} has the best validation {val_metric.removeprefix('best/val_')} of its {seeds} "
            f"({val_score:.4f}); the policy's mean test {row['score_metric']} over its {seeds}: {mean:.4f}"
            if val_metric else f"; no validation score logged, so its first seed, {seed}, of its {seeds}; the "
            f"policy's mean test {row['score_metric']}: {mean:.4f}")
    return {"run_id": chosen["run_id"], "run_name": chosen.get("tags.mlflow.runName", ""),
            "augmentation": row["augmentation"], "seed": seed, "metric": row["score_metric"], "score": mean,
            "n_seeds": len(runs), "val_metric": val_metric, "val_score": val_score, "verdict": row["verdict"],
            "reason": why}


def _by_validation(runs: pd.DataFrame, score_metric: str) -> tuple[pd.Series, str]:
    """The run with the best validation score and the metric that said so: the highest best/val_<score metric>,
    else the lowest best/val_loss; ties go to the lower validation loss, then the lower seed. Without either, the
    lowest seed and ""."""
    ordered = runs.assign(_seed=pd.to_numeric(runs["seed"], errors="coerce"))
    loss = "metrics.best/val_loss"
    ordered["_loss"] = ordered[loss].astype(float) if loss in ordered else math.nan
    for column, higher in ((f"metrics.best/val_{score_metric}", True), (loss, False)):
        if column in ordered and ordered[column].astype(float).notna().any():
            ordered["_val"] = ordered[column].astype(float) * (-1 if higher else 1)
            top = ordered.sort_values(["_val", "_loss", "_seed"], kind="stable", na_position="last").iloc[0]
            return top, column.removeprefix("metrics.")
    return ordered.sort_values("_seed", kind="stable").iloc[0], ""


def register(tracking_cfg, name: str, table: pd.DataFrame, finished: pd.DataFrame) -> dict:
    """Register the chosen run's MLflow Model as a new version of `name`; returns the choice with `version` and
    `new` (False when the newest version already held it)."""
    pick = choose(table, finished)
    # The policy's mean test score, the estimate the decision stands on, not the chosen seed's own draw.
    tags = {"augmentation": pick["augmentation"], "seed": pick["seed"], "verdict": pick["verdict"],
            f"test_{pick['metric']}_mean": pick["score"], "n_seeds": pick["n_seeds"],
            "selected_by": pick["val_metric"] or "first seed"}
    if pick["val_metric"]:
        tags[pick["val_metric"].removeprefix("best/")] = pick["val_score"]
    version, pick["new"] = tracking.register_model(tracking_cfg, pick["run_id"], name, description=pick["reason"],
                                                   tags=tags)
    pick["version"] = version.version
    return pick
