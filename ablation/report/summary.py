"""The report's table: one row per (dataset, model, setting, augmentation, task), each policy decided against the
`none` of its block, paired by seed (ablation/report/decide.py has the rule), with the flags that say when a comparison
cannot be trusted yet (underfitting, unfinished training) and the seeds that would decide an undecided row.
Pure pandas over what the runs logged; report.py reads that from MLflow and writes the files."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablation.core import curves, stats
from ablation.core.names import BASELINE, BLOCK, KEYS
from ablation.report import decide, sequential

# The runs compared with one baseline, and their task (a block holds one).
GROUP = [*BLOCK, "task"]
DEFAULT_TASK = "classify"  # runs recorded without a task tag are classifiers (ablation/training/tasks.py)
# The decision columns lead; the details follow.
COLUMNS = [*KEYS, "verdict", "flags", "failed", "delta_test_score", "delta_test_score_ci_low",
           "delta_test_score_ci_high", "delta_test_score_adj_low", "delta_test_score_adj_high", "margin",
           "margin_relative", "delta_gap", "delta_gap_ci_low", "delta_gap_ci_high", "gap_margin", "n_seeds",
           "seeds_needed", "score_metric", "score_unit", "score_step", "gap_estimator", "test_score_mean",
           "test_score_std", "gap_mean", "gap_std", "p_gap", "p_gap_adjusted", "p_score", "p_score_adjusted",
           "p_equivalence_gap", "p_equivalence_score", "verdict_rule", "verdict_uncorrected", "underfits",
           "delta_train_clean_score", "delta_train_clean_score_ci_high", "unfinished", "unfinished_seeds", "max_seed",
           "epoch_limit", "epochs_trained_mean", "best_epoch_mean", *[f"delta_gap_{e}" for e in curves.ESTIMATORS],
           "test_accuracy_mean", "test_accuracy_std", "gap_accuracy_mean", "gap_loss_mean", "gap_loss_std",
           "delta_test_accuracy", "task", "test_psnr_mean", "test_psnr_std", "test_mae_mean", "delta_test_psnr",
           "mode", "time_total_s_mean", "time_total_s_median", "time_vs_baseline", "images_per_s_mean",
           "time_expand_s_mean", "expanded_bytes_mean",
           # Generated training images (ablation/training/synthetic.py): the generator's training time, sample affinity.
           "time_generator_s_mean", "sample_affinity_mean",
           # A sequential design (sweep.seeds=auto): the look each row stopped at, of how many, its alpha, and why.
           "look", "looks", "alpha_look", "stopped", "delta_test_score_rci_low", "delta_test_score_rci_high",
           "delta_gap_rci_low", "delta_gap_rci_high"]
# The headline test score of a task and the clean-train score the underfitting flag compares.
SCORES = {"classify": "accuracy", "reconstruct": "psnr", "inpaint": "psnr"}
# Accuracies are in points (percent) in the table, so every delta reads as points; PSNR in dB.
UNITS = {"accuracy": "points", "psnr": "dB"}
POINTS = {"accuracy": 100.0}  # the factor from a logged score to the table's unit
DEFAULTS = {"correction": "bh", "alpha": 0.05, "gap": "paired_auc", "power": 0.8,
            "margin": {"relative": 0.1, "accuracy": None, "psnr": 0.5, "gap": 0.1},
            "underfit": {"accuracy": 5.0, "psnr": 1.0}}


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
    scale = table["score_metric"].map(POINTS).fillna(1.0)
    table["test_score"] = [r[f"test_{m}"] for m, (_, r) in zip(table["score_metric"], table.iterrows())] * scale
    table["train_score"] = [float(r.get(f"metrics.best/train_clean_{m}", math.nan))
                            for m, (_, r) in zip(table["score_metric"], table.iterrows())] * scale
    # One test image: the step an accuracy moves in (its spread's floor, ablation/core/stats.py); PSNR is continuous.
    n_test = column("metrics.data/n_test").astype(float)
    table["score_step"] = np.where(table["score_metric"] == "accuracy", 100.0 / n_test, 0.0)
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
    estimates, unfinished, trained, gap_curves = [], [], [], []
    for (_, run), watched in zip(table.iterrows(), monitor):
        part = curves_of.get(run["run_id"], pd.DataFrame(columns=["metric", "epoch", "value"]))
        wide = part.pivot_table(index="epoch", columns="metric", values="value").sort_index()

        def curve(metric, wide=wide):
            return wide[metric].to_numpy(float) if metric in wide else np.array([])
        train_loss, val_loss = curve("train_clean/loss"), curve("val/loss")
        if len(train_loss) != len(val_loss):
            train_loss = val_loss = np.array([])
        estimates.append(curves.gaps(train_loss, val_loss, run["best_epoch"], run["gap_loss"], run["test_loss"]))
        gap_curves.append(val_loss - train_loss)
        metric = "val/" + watched.removeprefix("val_")
        unfinished.append(curves.unfinished(curve(metric), run["best_epoch"], run["epoch_limit"],
                                            higher_is_better=metric != "val/loss"))
        trained.append(float(len(curve(metric))) or math.nan)
    for name in curves.RUN_ESTIMATORS:
        table[f"gap_{name}"] = [e[name] for e in estimates]
    table["gap_curve"] = gap_curves
    # paired_auc is a difference of two runs (summary() pairs them); a run's own number is its auc.
    table["gap_paired_auc"] = table["gap_auc"]
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


def _paired_curves(group: pd.DataFrame, base: pd.DataFrame, seeds: list[int]) -> np.ndarray:
    """paired_auc per seed: each pair's runs compared over the epochs both trained (curves.paired)."""
    mine, theirs = (g.drop_duplicates("seed").set_index("seed")["gap_curve"] for g in (group, base))
    return np.array([curves.paired(mine[s], theirs[s]) if s in mine.index and s in theirs.index else np.nan
                     for s in seeds], dtype=float)


def summary(runs: pd.DataFrame, opts: dict, failed: pd.DataFrame | None = None) -> pd.DataFrame:
    """The report table from per_run(); rows sorted by block, then verdict, then delta test score. failed: the
    runs that failed with no finished run of their combination (dataset, model, augmentation, seed; report.runs_of)."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for block_key, block in runs.groupby(GROUP):
        key = dict(zip(GROUP, block_key))
        decide_block = _sequential_block if opts.get("sequential") is not None else _block
        rows += decide_block(key, block, opts, _failed_in(failed, key))
    out = pd.DataFrame(rows, columns=COLUMNS)
    order = {v: i for i, v in enumerate((*decide.VERDICTS, decide.BASELINE_ROW))}
    rank = out["verdict"].map(order).fillna(out["verdict"].str.startswith("undecided:").map(
        {True: order[decide.UNFINISHED], False: len(order)}))
    out = out.assign(_order=rank, _score=-out["delta_test_score"].fillna(0))
    return out.sort_values([*BLOCK, "_order", "_score"]).drop(columns=["_order", "_score"]).reset_index(drop=True)


def _failed_in(failed: pd.DataFrame | None, key: dict) -> pd.DataFrame:
    """The failed runs of one block: matched on dataset and model (a failed run has no setting of its own)."""
    if failed is None or failed.empty or "augmentation" not in failed:
        return pd.DataFrame(columns=["augmentation", "seed"])
    mask = pd.Series(True, index=failed.index)
    for k in ("dataset", "model"):
        if k in failed:
            mask &= failed[k].astype(str) == str(key[k])
    return failed[mask]


def margins(score_metric: str, base: pd.DataFrame, opts: dict) -> tuple[float, float]:
    """(the score's margin in its unit, the same relative to none's errors). Accuracy: report.margin.accuracy
    points when set, else report.margin.relative of none's error rate (0.1: at most 10% more errors than none);
    PSNR: report.margin.psnr dB."""
    given = opts["margin"]
    if score_metric != "accuracy":
        return float(given[score_metric]), math.nan
    errors = 100.0 - base["test_score"].astype(float).mean() if len(base) else math.nan
    if given.get("accuracy") is not None:
        absolute = float(given["accuracy"])
        return absolute, absolute / errors if errors > 0 else math.nan
    relative = float(given["relative"])
    return relative * errors, relative


def _block(key: dict, block: pd.DataFrame, opts: dict, failed: pd.DataFrame) -> list[dict]:
    """The rows of one baseline's family: every policy of the block decided together."""
    score_metric = block["score_metric"].iloc[0]
    base = block[block["augmentation"] == BASELINE]
    margin, relative = margins(score_metric, base, opts)
    # Equivalence of the gap: within report.margin.gap of none's own mean gap.
    gap_margin = float(opts["margin"]["gap"]) * abs(base["gap"].astype(float).mean()) if len(base) else math.nan
    policies = sorted(a for a in block["augmentation"].unique() if a != BASELINE)
    seeds = sorted(block["seed"].unique())
    groups = {a: block[block["augmentation"] == a] for a in policies}
    d = {c: np.array([_matrix(groups[a], base, c, seeds) for a in policies]).reshape(len(policies), len(seeds))
         for c in ("test_score", "train_score", *[f"gap_{e}" for e in curves.RUN_ESTIMATORS])}
    d["gap_paired_auc"] = np.array([_paired_curves(groups[a], base, seeds) for a in policies]).reshape(
        len(policies), len(seeds))
    d["gap"] = d[f"gap_{opts['gap']}"]
    lost = failed.groupby(failed["augmentation"].astype(str))["seed"].nunique() if len(failed) else pd.Series(dtype=int)
    n_failed = np.array([int(lost.get(a, 0)) for a in policies], dtype=int)
    totals = np.array([groups[a]["seed"].nunique() for a in policies], dtype=int) + n_failed
    described = {a: _describe(key, a, groups[a]) for a in policies}
    flagged = np.array([described[a]["unfinished"] for a in policies], dtype=bool)
    steps = block["score_step"].astype(float)
    step = float(steps.max()) if steps.notna().any() else 0.0
    settings = {"correction": opts["correction"], "margin": margin, "score_floor": step, "gap_margin": gap_margin,
                "failed": n_failed, "total": totals, "unfinished": flagged}
    at = opts.get("look")  # (k, schedule, open policies) in a sequential design: look k's level over the open rows
    if at is None:
        decision = decide.decide(d["gap"], d["test_score"], alpha=opts["alpha"], **settings)
    else:
        decision = sequential.look(d["gap"], d["test_score"], at[0], at[1], [a in at[2] for a in policies],
                                   **settings)
    gap, score, train = decision["gap"], decision["score"], stats.paired(d["train_score"])
    rows = []
    for i, augmentation in enumerate(policies):
        verdict = str(decision["verdict"][i])
        threshold = float(opts["underfit"][score_metric])
        # Underfits: the clean-train score shown lower than none's (its raw interval below zero) by more than the
        # threshold on average.
        underfits = bool(train["mean"][i] < -threshold and train["high"][i] < 0)
        row = {**described[augmentation], "verdict": verdict,
               "failed": f"{n_failed[i]}/{totals[i]}",
               "delta_test_score": score["mean"][i], "delta_test_score_ci_low": score["low"][i],
               "delta_test_score_ci_high": score["high"][i],
               "delta_test_score_adj_low": decision["score_ni_low"][i],
               "delta_test_score_adj_high": decision["score_ni_high"][i], "margin": margin,
               "margin_relative": relative, "delta_gap": gap["mean"][i], "delta_gap_ci_low": gap["low"][i],
               "delta_gap_ci_high": gap["high"][i], "gap_margin": gap_margin,
               "n_seeds": int(gap["n"][i]) if len(base) else groups[augmentation]["seed"].nunique(),
               "seeds_needed": decide.seeds_needed(verdict, gap["sd_used"][i], score["sd_used"][i], margin,
                                                   gap_margin, opts["alpha"], opts["power"]),
               "score_unit": UNITS.get(score_metric, ""), "score_step": step,
               "p_gap": gap["p"][i], "p_gap_adjusted": decision["gap_p_adjusted"][i], "p_score": score["p"][i],
               "p_score_adjusted": decision["score_p_adjusted"][i],
               "p_equivalence_gap": decision["tost_p_gap"][i], "p_equivalence_score": decision["tost_p_score"][i],
               "verdict_rule": str(decision["verdict_rule"][i]),
               "verdict_uncorrected": str(decision["verdict_raw"][i]), "underfits": underfits,
               "gap_wider": bool(decision["gap_wider"][i]) and verdict != decide.WIDENS,
               "delta_train_clean_score": train["mean"][i], "delta_train_clean_score_ci_high": train["high"][i],
               **{f"delta_gap_{e}": np.nanmean(d[f"gap_{e}"][i]) if np.isfinite(d[f"gap_{e}"][i]).any() else math.nan
                  for e in curves.ESTIMATORS},
               "delta_test_accuracy": 100 * _mean_delta(groups[augmentation], base, "test_accuracy", seeds),
               "delta_test_psnr": _mean_delta(groups[augmentation], base, "test_psnr", seeds)}
        if at is not None:  # the repeated confidence intervals of this look (level 1 - its alpha): what it shows
            row.update({"delta_gap_rci_low": decision["gap_rci"][0][i], "delta_gap_rci_high": decision["gap_rci"][1][i],
                        "delta_test_score_rci_low": decision["score_rci"][0][i],
                        "delta_test_score_rci_high": decision["score_rci"][1][i],
                        "look": at[0] + 1, "looks": len(at[1].seeds), "alpha_look": decision["alpha"],
                        "stopped": str(decision["reason"][i])})
        if base.empty:
            row["verdict"] = row["verdict_uncorrected"] = row["verdict_rule"] = "no baseline"
        rows.append(row)
    if len(base):
        zero = {c: 0.0 for c in ("delta_test_score", "delta_test_score_ci_low", "delta_test_score_ci_high",
                                  "delta_gap", "delta_gap_ci_low", "delta_gap_ci_high", "delta_train_clean_score",
                                  "delta_test_accuracy" if score_metric == "accuracy" else "delta_test_psnr",
                                  *[f"delta_gap_{e}" for e in curves.ESTIMATORS])}
        lost_base = int(lost.get(BASELINE, 0))
        rows.append({**_describe(key, BASELINE, base), **zero, "verdict": decide.BASELINE_ROW,
                     "verdict_uncorrected": decide.BASELINE_ROW, "verdict_rule": decide.BASELINE_ROW,
                     "n_seeds": base["seed"].nunique(), "underfits": False, "gap_wider": False,
                     "failed": f"{lost_base}/{base['seed'].nunique() + lost_base}", "margin": margin,
                     "margin_relative": relative, "gap_margin": gap_margin, "score_step": step,
                     "score_unit": UNITS.get(score_metric, ""), "seeds_needed": math.nan})
    # What a policy costs: its wall time per run against the baseline's in the same block. Medians: the first
    # run of a process also compiles the model (ablation/training/reuse.py), whichever policy it trains.
    base_time = base["time_total_s"].astype(float).median() if len(base) else math.nan
    for row in rows:
        row["time_vs_baseline"] = row["time_total_s_median"] / base_time if base_time > 0 else math.nan
        ruled = row.get("verdict_rule", "")
        row["flags"] = "; ".join(f for f in (
            "underfits" if row["underfits"] else "",
            f"unfinished {row['unfinished_seeds']}" if row["unfinished"] else "",
            f"failed {row['failed']}" if not str(row["failed"]).startswith("0/") else "",
            decide.GAP_WIDER if row.pop("gap_wider", False) else "",
            # A loss the raw interval shows, not beyond the correction: never hidden behind another verdict.
            decide.SCORE_LOWER if row["delta_test_score_ci_high"] < 0 and row["verdict"] not in decide.HARM else "",
            f"else: {ruled}" if str(row["verdict"]).startswith("undecided:") and ruled else "") if f)
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
            "unfinished_seeds": f"{unfinished}/{len(group)}", "max_seed": int(group["seed"].max())}


def _sequential_block(key: dict, block: pd.DataFrame, opts: dict, failed: pd.DataFrame) -> list[dict]:
    """The rows of one baseline's family in a sequential design (opts["sequential"]: a sequential.Schedule): look k
    decides the rows still open on the block's first schedule.seeds[k] seeds (in increasing order, as the sweep
    runs them) at that look's alpha; a row that stops keeps the row of the look it stopped at, never decided again.
    Looks stop at the first one whose seeds have not all run for every open row, or after opts["looks_made"] (a
    sweep between its rounds, whose store may hold more seeds from earlier sweeps): those rows stay `open` (column
    stopped)."""
    plan = opts["sequential"]
    made = opts.get("looks_made") or len(plan.seeds)  # a sweep between its rounds: the looks it has made so far
    seeds = sorted(block["seed"].unique())
    policies = sorted(a for a in block["augmentation"].unique() if a != BASELINE)
    open_rows, kept, latest = set(policies), {}, {}
    for k, n in enumerate(plan.seeds[:made]):
        first = seeds[:n]
        part = block[block["seed"].isin(first)]
        lost = failed[failed["seed"].isin(first)] if len(failed) else failed
        ran = {a: part.loc[part["augmentation"] == a, "seed"].nunique() +
               (lost.loc[lost["augmentation"].astype(str) == a, "seed"].nunique() if len(lost) else 0)
               for a in (*open_rows, BASELINE)}
        if len(first) < n or any(count < n for count in ran.values()):
            break  # this look's seeds have not all run yet
        for row in _block(key, part, {**opts, "look": (k, plan, open_rows)}, lost):
            name = row["augmentation"]
            if name == BASELINE or name in open_rows:
                latest[name] = row
                if name != BASELINE and row["stopped"] != sequential.OPEN:
                    kept[name] = row
        open_rows -= set(kept)
        if not open_rows:
            break
    if not latest:  # the first look's seeds have not all run: every row open, nothing decided yet
        rows = _block(key, block, {**opts, "alpha": plan.alphas[0]}, failed)
        for row in rows:
            row.update(look=0, looks=len(plan.seeds), alpha_look=plan.alphas[0], seeds_needed=math.nan)
            if row["augmentation"] == BASELINE:
                continue
            verdict = str(row["verdict"])
            row["stopped"] = (sequential.UNFINISHED if verdict == decide.UNFINISHED else sequential.FAILED
                              if verdict.startswith("undecided: ") else sequential.OPEN)
            if row["stopped"] == sequential.OPEN:
                row["verdict"] = decide.UNDECIDED
        return rows
    return [kept.get(name, row) for name, row in latest.items()]
