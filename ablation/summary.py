"""The report's table: one row per (dataset, model, setting, augmentation, task), each policy decided against the
`none` of its block, paired by seed (ablation/decide.py has the rule), with the flags that say when a comparison
cannot be trusted yet (underfitting, unfinished training) and the seeds that would decide an undecided row.
Pure pandas over what the runs logged; report.py reads that from MLflow and writes the files."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablation import curves, decide

KEYS = ["dataset", "model", "setting", "augmentation"]
BLOCK = ["dataset", "model", "setting", "task"]
BASELINE = "none"
DEFAULT_TASK = "classify"  # runs recorded without a task tag are classifiers (ablation/tasks.py)
# The decision columns lead; the details follow.
COLUMNS = [*KEYS, "verdict", "flags", "delta_test_score", "delta_test_score_ci_low", "delta_test_score_ci_high",
           "delta_gap", "delta_gap_ci_low", "delta_gap_ci_high", "n_seeds", "seeds_needed", "score_metric",
           "gap_estimator", "test_score_mean", "test_score_std", "gap_mean", "gap_std", "p_gap", "p_gap_adjusted",
           "p_score", "p_score_adjusted", "verdict_uncorrected", "underfits", "delta_train_clean_score",
           "unfinished", "unfinished_seeds", "epoch_limit", "epochs_trained_mean", "best_epoch_mean",
           *[f"delta_gap_{e}" for e in curves.ESTIMATORS],
           "test_accuracy_mean", "test_accuracy_std", "gap_accuracy_mean", "gap_loss_mean", "gap_loss_std",
           "delta_test_accuracy", "task", "test_psnr_mean", "test_psnr_std", "test_mae_mean", "delta_test_psnr",
           "mode", "time_total_s_mean", "time_total_s_median", "time_vs_baseline", "images_per_s_mean",
           "time_expand_s_mean", "expanded_bytes_mean",
           # Generated training images (ablation/synthetic.py): the generator's training time, sample affinity.
           "time_generator_s_mean", "sample_affinity_mean"]
# The headline test score of a task and the clean-train score the underfitting flag compares.
SCORES = {"classify": "accuracy", "reconstruct": "psnr", "inpaint": "psnr"}
DEFAULTS = {"correction": "bh", "alpha": 0.05, "margin": {"accuracy": 0.01, "psnr": 0.5}, "gap": "auc",
            "underfit": {"accuracy": 0.05, "psnr": 1.0}, "power": 0.8}


def key_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's KEYS columns as text, a missing value (no setting) as "": how report rows and runs are matched."""
    return pd.DataFrame({k: frame[k].astype(object).where(frame[k].notna(), "").astype(str) for k in KEYS},
                        index=frame.index)


def options(report_cfg=None) -> dict:
    """cfg.report as a plain dict with every key (a store written before a key existed, or a test's dict)."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(report_cfg, resolve=True) if report_cfg is not None and not isinstance(report_cfg, dict) \
        else dict(report_cfg or {})
    out = {**DEFAULTS, **given}
    for key in ("margin", "underfit"):
        out[key] = {**DEFAULTS[key], **(given.get(key) or {})}
    return out


def per_run(finished: pd.DataFrame, history: pd.DataFrame, gap_estimator: str) -> pd.DataFrame:
    """One row per run: its keys, seed, test and clean-train scores, every gap estimate and the chosen one
    (`gap`), and whether it was unfinished. history: long format (run_id, metric, epoch, value)."""
    def column(name, default=math.nan):
        return finished[name] if name in finished else pd.Series(default, index=finished.index)

    table = finished.assign(seed=finished["seed"].astype(int),
                            task=column("tags.task", DEFAULT_TASK).fillna(DEFAULT_TASK),
                            mode=column("tags.augmentation_mode", "online").fillna("online"))
    table["score_metric"] = table["task"].map(SCORES).fillna("accuracy")
    for metric in ("accuracy", "psnr", "mae", "loss"):
        table[f"test_{metric}"] = column(f"metrics.test/{metric}").astype(float)
    table["test_score"] = [r[f"test_{m}"] for m, (_, r) in zip(table["score_metric"], table.iterrows())]
    table["train_score"] = [float(r.get(f"metrics.best/train_clean_{m}", math.nan))
                            for m, (_, r) in zip(table["score_metric"], table.iterrows())]
    table["gap_loss"] = column("metrics.best/gap_loss").astype(float)
    table["gap_accuracy"] = column("metrics.best/gap_accuracy").astype(float)
    for name, metric in (("time_total_s", "time/total_s"), ("time_expand_s", "time/expand_s"),
                         ("images_per_s", "throughput/images_per_s"),
                         ("expanded_bytes", "data/expanded_bytes"), ("best_epoch", "best_epoch"),
                         ("time_generator_s", "time/generator_train_s"), ("sample_affinity", "synthetic/affinity")):
        table[name] = column(f"metrics.{metric}").astype(float)
    table["epoch_limit"] = pd.to_numeric(column("params.trainer.epochs"), errors="coerce")
    monitor = column("params.trainer.monitor", "val_loss").fillna("val_loss")
    curves_of = {rid: part for rid, part in history.groupby("run_id")} if len(history) else {}
    estimates, unfinished, trained = [], [], []
    for (_, run), watched in zip(table.iterrows(), monitor):
        part = curves_of.get(run["run_id"], pd.DataFrame(columns=["metric", "epoch", "value"]))
        wide = part.pivot_table(index="epoch", columns="metric", values="value").sort_index()

        def curve(metric, wide=wide):
            return wide[metric].to_numpy(float) if metric in wide else np.array([])
        train_loss, val_loss = curve("train_clean/loss"), curve("val/loss")
        if len(train_loss) != len(val_loss):
            train_loss = val_loss = np.array([])
        estimates.append(curves.gaps(train_loss, val_loss, run["best_epoch"], run["gap_loss"], run["test_loss"]))
        metric = "val/" + watched.removeprefix("val_")
        unfinished.append(curves.unfinished(curve(metric), run["best_epoch"], run["epoch_limit"],
                                            higher_is_better=metric != "val/loss"))
        trained.append(float(len(curve(metric))) or math.nan)
    for name in curves.ESTIMATORS:
        table[f"gap_{name}"] = [e[name] for e in estimates]
    table["gap"] = table[f"gap_{gap_estimator}"]
    table["unfinished"] = unfinished
    table["epochs_trained"] = trained
    return table


def _matrix(group: pd.DataFrame, base: pd.DataFrame, column: str, seeds: list[int]) -> np.ndarray:
    """Policy minus baseline of one column, per seed (NaN where either lacks the seed; two runs of one seed, which
    finished combinations never are, would count as their mean)."""
    mine = group[column].astype(float).groupby(group["seed"]).mean().reindex(seeds)
    theirs = base[column].astype(float).groupby(base["seed"]).mean().reindex(seeds)
    return (mine - theirs).to_numpy(float)


def summary(runs: pd.DataFrame, opts: dict) -> pd.DataFrame:
    """The report table from per_run(); rows sorted by block, then verdict, then delta test score."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for block_key, block in runs.groupby(BLOCK):
        rows += _block(dict(zip(BLOCK, block_key)), block, opts)
    out = pd.DataFrame(rows, columns=COLUMNS)
    order = {v: i for i, v in enumerate((*decide.VERDICTS, decide.BASELINE))}
    out = out.assign(_order=out["verdict"].map(order).fillna(len(order)), _score=-out["delta_test_score"].fillna(0))
    return out.sort_values([*BLOCK[:3], "_order", "_score"]).drop(columns=["_order", "_score"]).reset_index(drop=True)


def _block(key: dict, block: pd.DataFrame, opts: dict) -> list[dict]:
    """The rows of one baseline's family: every policy of the block decided together."""
    score_metric = block["score_metric"].iloc[0]
    margin = float(opts["margin"][score_metric])
    base = block[block["augmentation"] == BASELINE]
    policies = sorted(a for a in block["augmentation"].unique() if a != BASELINE)
    seeds = sorted(block["seed"].unique())
    groups = {a: block[block["augmentation"] == a] for a in policies}
    d = {c: np.array([_matrix(groups[a], base, c, seeds) for a in policies]).reshape(len(policies), len(seeds))
         for c in ("gap", "test_score", "train_score", *[f"gap_{e}" for e in curves.ESTIMATORS])}
    decision = decide.decide(d["gap"], d["test_score"], opts["correction"], opts["alpha"], margin)
    gap, score, train = decision["gap"], decision["score"], decide.paired(d["train_score"])
    level = decide.next_level(np.r_[decision["gap_p_adjusted"], decision["score_p_adjusted"]], opts["alpha"],
                              opts["correction"])
    rows = []
    for i, augmentation in enumerate(policies):
        verdict = str(decision["verdict"][i])
        underfits = bool(train["mean"][i] < -float(opts["underfit"][score_metric]))
        row = {**_describe(key, augmentation, groups[augmentation]), "verdict": verdict,
               "delta_test_score": score["mean"][i], "delta_test_score_ci_low": score["low"][i],
               "delta_test_score_ci_high": score["high"][i], "delta_gap": gap["mean"][i],
               "delta_gap_ci_low": gap["low"][i], "delta_gap_ci_high": gap["high"][i],
               "n_seeds": int(gap["n"][i]) if len(base) else groups[augmentation]["seed"].nunique(),
               "seeds_needed": decide.seeds_needed(verdict, gap, score, i, level, margin,
                                                   opts["power"]),
               "p_gap": gap["p"][i], "p_gap_adjusted": decision["gap_p_adjusted"][i], "p_score": score["p"][i],
               "p_score_adjusted": decision["score_p_adjusted"][i],
               "verdict_uncorrected": str(decision["verdict_raw"][i]), "underfits": underfits,
               "delta_train_clean_score": train["mean"][i],
               **{f"delta_gap_{e}": np.nanmean(d[f"gap_{e}"][i]) if np.isfinite(d[f"gap_{e}"][i]).any() else math.nan
                  for e in curves.ESTIMATORS},
               "delta_test_accuracy": _mean_delta(groups[augmentation], base, "test_accuracy", seeds),
               "delta_test_psnr": _mean_delta(groups[augmentation], base, "test_psnr", seeds)}
        if base.empty:
            row["verdict"] = row["verdict_uncorrected"] = "no baseline"
        rows.append(row)
    if len(base):
        zero = {c: 0.0 for c in ("delta_test_score", "delta_test_score_ci_low", "delta_test_score_ci_high",
                                  "delta_gap", "delta_gap_ci_low", "delta_gap_ci_high", "delta_train_clean_score",
                                  "delta_test_accuracy" if score_metric == "accuracy" else "delta_test_psnr",
                                  *[f"delta_gap_{e}" for e in curves.ESTIMATORS])}
        rows.append({**_describe(key, BASELINE, base), **zero, "verdict": decide.BASELINE,
                     "verdict_uncorrected": decide.BASELINE, "n_seeds": base["seed"].nunique(), "underfits": False,
                     "seeds_needed": math.nan})
    # What a policy costs: its wall time per run against the baseline's in the same block. Medians: the first
    # run of a process also compiles the model (ablation/reuse.py), whichever policy it trains.
    base_time = base["time_total_s"].astype(float).median() if len(base) else math.nan
    for row in rows:
        row["time_vs_baseline"] = row["time_total_s_median"] / base_time if base_time > 0 else math.nan
        row["flags"] = "; ".join(f for f in (
            "underfits" if row["underfits"] else "",
            f"unfinished {row['unfinished_seeds']}" if row["unfinished"] else "") if f)
        row["gap_estimator"] = opts["gap"]
    return rows


def _mean_delta(group: pd.DataFrame, base: pd.DataFrame, column: str, seeds: list[int]) -> float:
    d = _matrix(group, base, column, seeds)
    return float(np.nanmean(d)) if np.isfinite(d).any() else math.nan


def _describe(key: dict, augmentation: str, group: pd.DataFrame) -> dict:
    """What a row says about its own runs: means, spreads, how long they trained, whether they finished."""
    def mean(c):
        return group[c].astype(float).mean()

    def std(c):
        return group[c].astype(float).std(ddof=1) if len(group) > 1 else math.nan
    unfinished = int(group["unfinished"].sum())
    return {**key, "augmentation": augmentation, "score_metric": group["score_metric"].iloc[0],
            "mode": "/".join(sorted(set(group["mode"]))), "test_score_mean": mean("test_score"),
            "test_score_std": std("test_score"), "gap_mean": mean("gap"), "gap_std": std("gap"),
            "test_accuracy_mean": mean("test_accuracy"), "test_accuracy_std": std("test_accuracy"),
            "gap_accuracy_mean": mean("gap_accuracy"), "gap_loss_mean": mean("gap_loss"), "gap_loss_std": std("gap_loss"),
            "test_psnr_mean": mean("test_psnr"), "test_psnr_std": std("test_psnr"), "test_mae_mean": mean("test_mae"),
            "time_total_s_mean": mean("time_total_s"), "time_total_s_median": group["time_total_s"].astype(float).median(),
            "images_per_s_mean": mean("images_per_s"), "time_expand_s_mean": mean("time_expand_s"),
            "expanded_bytes_mean": mean("expanded_bytes"), "time_generator_s_mean": mean("time_generator_s"),
            "sample_affinity_mean": mean("sample_affinity"), "epoch_limit": group["epoch_limit"].max(),
            "epochs_trained_mean": mean("epochs_trained"), "best_epoch_mean": mean("best_epoch"),
            # Unfinished when at least half its seeds were: one seed's best epoch at the end can be chance.
            "unfinished": 2 * unfinished >= len(group) and unfinished > 0,
            "unfinished_seeds": f"{unfinished}/{len(group)}"}
