"""python -m ablation.report [experiment_name=NAME] [tracking.uri=...]: the comparison table of an experiment,
read back from MLflow (never from in-process state), one row per policy, mean over seeds."""
from __future__ import annotations

import sys

import pandas as pd
from omegaconf import DictConfig

from ablation import tracking

KEYS = ["dataset", "model", "augmentation"]
METRICS = {"test_accuracy": "metrics.test/accuracy", "gap_loss": "metrics.best/gap_loss",
           "gap_accuracy": "metrics.best/gap_accuracy", "best_epoch": "metrics.best_epoch"}


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, augmentation): seeds counted, metrics averaged; smallest gap first."""
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        return pd.DataFrame(columns=[*KEYS, "n_seeds", *(f"{m}_mean" for m in METRICS)])
    table = finished.rename(columns={f"tags.{k}": k for k in KEYS} | {v: k for k, v in METRICS.items()})
    grouped = table.groupby(KEYS)
    out = grouped[list(METRICS)].mean().add_suffix("_mean")
    out.insert(0, "n_seeds", grouped["tags.seed"].nunique())
    return out.reset_index().sort_values("gap_loss_mean").reset_index(drop=True)


def main(cfg: DictConfig) -> pd.DataFrame:
    runs = tracking.load_runs(cfg.tracking, cfg.experiment_name)
    if runs.empty:
        print(f"error: experiment_name: no runs in MLflow experiment {cfg.experiment_name!r}", file=sys.stderr)
        raise SystemExit(2)
    table = summary(runs)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(f"\n{cfg.experiment_name}: mean over seeds, sorted by the best-epoch gap (val loss - clean train loss)")
        print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    from ablation.cli import compose_from_argv

    main(compose_from_argv(sys.argv[1:]))
