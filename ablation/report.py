"""python -m ablation.report [experiment_name=NAME | +parent_run_id=ID] [tracking.uri=...]: the gap report of an
experiment, read back from MLflow (mlflow.search_runs and metric histories, never in-process state), written to
runs/reports/<experiment_name>/: summary.csv, summary.md, curves.png, gaps.png, previews.png, heatmap.png (when
several datasets or models), report.html. The sweep callback builds it when a sweep ends."""
from __future__ import annotations

import html
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from ablation import plots, tracking

# setting: what else the runs of one dataset and model differ in (see settings()); empty when only the policy and
# the seed vary.
KEYS = ["dataset", "model", "setting", "augmentation"]
BASELINE = "none"
COLUMNS = [*KEYS, "n_seeds", "test_accuracy_mean", "test_accuracy_std", "gap_accuracy_mean", "gap_accuracy_std",
           "gap_loss_mean", "gap_loss_std", "delta_gap_loss", "delta_gap_loss_ci_low", "delta_gap_loss_ci_high",
           "delta_test_accuracy", "verdict", "mode", "time_total_s_mean", "time_expand_s_mean",
           "expanded_bytes_mean", "task", "test_psnr_mean", "test_psnr_std", "test_mae_mean", "delta_test_psnr"]
# Runs recorded without a task tag are classifiers (ablation/tasks.py). Image tasks have no accuracy: their
# accuracy columns stay empty and the test score is psnr (and mae); the gap and its verdict are the loss's for all.
DEFAULT_TASK = "classify"
VERDICTS = ("reduces gap", "no clear effect", "widens gap")
CURVE_METRICS = ("train_clean/loss", "val/loss")
# Params that never set runs apart in the report: the seed (runs are paired over it), where and how a run is
# tracked or executed, and the policy itself (its name is the augmentation column; see settings() for its content).
NOT_SETTINGS = ("seed", "experiment_name", "force", "design", "tracking.", "augmentation.", "data/", "dataset.cache",
                "trainer.verbose", "trainer.workers", "trainer.use_multiprocessing", "trainer.max_queue_size",
                "trainer.resume", "trainer.devices", "trainer.jit_compile")
SETTING_KEYS_KEPT = ("augmentation.where",)  # a policy on the host and on the device are different runs


def runs_of(cfg: DictConfig, parent_run_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(finished runs, one per combination, latest first; failed combinations; experiment name)."""
    name = tracking.experiment_of(cfg.tracking, parent_run_id) if parent_run_id else cfg.experiment_name
    runs = tracking.load_runs(cfg.tracking, name)
    if runs.empty:
        return runs, runs, name
    runs = runs[runs.get("tags.sweep", pd.Series(index=runs.index, dtype=object)) != "parent"]
    runs = runs.rename(columns={f"tags.{k}": k for k in [*KEYS, "seed"]})
    runs = runs.sort_values("start_time", ascending=False)
    finished = runs[runs["status"] == "FINISHED"].drop_duplicates("tags.config_hash")
    finished = finished.assign(**settings(finished))
    failed = runs[(runs["status"] == "FAILED") & ~runs["tags.config_hash"].isin(finished["tags.config_hash"])]
    failed = failed.drop_duplicates("tags.config_hash")
    return finished.reset_index(drop=True), failed.reset_index(drop=True), name


def settings(finished: pd.DataFrame) -> dict[str, pd.Series]:
    """What a sweep varied besides the policy and the seed, for each finished run: {"setting": "key=value ...",
    "augmentation": the name, with the policy's fingerprint added where one name stands for different policies}.

    A sweep over `dataset.normalize`, a learning rate or a model's width gives runs of the same policy name;
    averaged together they would hide the effect of either setting, and pairing by seed would pair the wrong runs.
    So every param that takes more than one value among the runs of one dataset, model and seed (a setting absent
    from some runs, recorded before it existed, does not count as varying; one that follows the seed is none)
    becomes part of the row's key, and each policy is compared with the `none` run of the same setting and seed."""
    setting = pd.Series("", index=finished.index, dtype=object)
    augmentation = finished["augmentation"].astype(str)
    params = [c for c in finished.columns if c.startswith("params.")
              and (c[7:] in SETTING_KEYS_KEPT or not c[7:].startswith(NOT_SETTINGS))]
    for _, block in finished.groupby(["dataset", "model"]) if len(finished) else ():
        # Varying among runs of the same seed: what follows the seed (dataset.split_seed: ${seed}) is no setting.
        by_seed = block[params].astype(str).where(block[params].notna()).groupby(block["seed"])
        varying = sorted(c for c, n in by_seed.nunique().max().items() if n > 1) if params else []
        if varying:
            setting[block.index] = [" ".join(f"{c[7:]}={v}" for c, v in zip(varying, values) if v == v)
                                    for values in block[varying].itertuples(index=False)]
    if "tags.policy_fingerprint" in finished:
        # One policy name, several contents (a policy file edited between sweeps, a mix given on the command
        # line): each content its own row, told apart by the start of its fingerprint.
        fingerprint = finished["tags.policy_fingerprint"].fillna("").astype(str)
        names = pd.DataFrame({"a": augmentation, "s": setting, "d": finished["dataset"], "m": finished["model"], "f": fingerprint})
        several = names.groupby(["a", "s", "d", "m"])["f"].transform("nunique") > 1
        augmentation = augmentation.where(~several, augmentation + " [" + fingerprint.str[:8] + "]")
    return {"setting": setting, "augmentation": augmentation}


def _t_interval(d: np.ndarray) -> tuple[float, float]:
    """95% t interval of the mean of paired differences; NaN with fewer than two pairs."""
    from scipy import stats

    if len(d) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def verdict(low: float, high: float) -> str:
    if high < 0:
        return "reduces gap"
    if low > 0:
        return "widens gap"
    return "no clear effect"


def summary(finished: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, augmentation, task). Deltas are against `none` of the same dataset, model and
    task, paired by seed (same seed = same split and initialisation); the interval is a 95% t interval over the
    pairs."""
    if finished.empty:
        return pd.DataFrame(columns=COLUMNS)
    def column(name, default=math.nan):
        return finished[name] if name in finished else pd.Series(default, index=finished.index)

    table = finished.assign(seed=finished["seed"].astype(int), test_accuracy=column("metrics.test/accuracy"),
                            gap_accuracy=column("metrics.best/gap_accuracy"),
                            gap_loss=finished["metrics.best/gap_loss"],
                            task=column("tags.task", DEFAULT_TASK).fillna(DEFAULT_TASK),
                            test_psnr=column("metrics.test/psnr"), test_mae=column("metrics.test/mae"),
                            # augmentation.mode: offline runs are named <policy>@offline, so they are rows of
                            # their own; wall time and the disk their expansion takes sit beside the gap.
                            mode=column("tags.augmentation_mode", "online").fillna("online"),
                            time_total_s=column("metrics.time/total_s"), time_expand_s=column("metrics.time/expand_s"),
                            expanded_bytes=column("metrics.data/expanded_bytes"))
    rows = []
    for (dataset, model, setting, augmentation, task), group in table.groupby([*KEYS, "task"]):
        row = {"dataset": dataset, "model": model, "setting": setting, "augmentation": augmentation, "task": task,
               "n_seeds": group["seed"].nunique(), "mode": "/".join(sorted(set(group["mode"])))}
        for metric in ("test_accuracy", "gap_accuracy", "gap_loss", "test_psnr"):
            row[f"{metric}_mean"] = group[metric].astype(float).mean()
            row[f"{metric}_std"] = group[metric].astype(float).std(ddof=1) if len(group) > 1 else math.nan
        for metric in ("time_total_s", "time_expand_s", "expanded_bytes", "test_mae"):
            row[f"{metric}_mean"] = group[metric].astype(float).mean()
        base = table[(table["dataset"] == dataset) & (table["model"] == model) & (table["task"] == task)
                     & (table["setting"] == setting) & (table["augmentation"] == BASELINE)]
        paired = group.merge(base, on="seed", suffixes=("", "_base"))
        d_gap = (paired["gap_loss"] - paired["gap_loss_base"]).to_numpy(float)
        low, high = _t_interval(d_gap) if augmentation != BASELINE else (0.0, 0.0)
        row.update(delta_gap_loss=d_gap.mean() if len(d_gap) else math.nan, delta_gap_loss_ci_low=low,
                   delta_gap_loss_ci_high=high, verdict=verdict(low, high))
        for metric in ("test_accuracy", "test_psnr"):  # NaN where the task has no such metric
            d = (paired[metric].astype(float) - paired[f"{metric}_base"].astype(float)).to_numpy(float)
            row[f"delta_{metric}"] = d.mean() if len(d) else math.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["delta_gap_loss", "gap_loss_mean"], na_position="last").reset_index(drop=True)


def histories(cfg: DictConfig, finished: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch curves of every finished run, long format: dataset, model, augmentation, seed, metric, epoch, value."""
    mlflow_client = tracking.client(cfg.tracking)
    rows = []
    for run in finished.itertuples(index=False):
        info = dict(zip(finished.columns, run))
        for metric in CURVE_METRICS:
            for point in mlflow_client.get_metric_history(info["run_id"], metric):
                rows.append({**{k: info[k] for k in KEYS}, "seed": info["seed"], "metric": metric,
                             "epoch": point.step, "value": point.value})
    return pd.DataFrame(rows, columns=[*KEYS, "seed", "metric", "epoch", "value"])


def previews(cfg: DictConfig, finished: pd.DataFrame, scratch: Path) -> list[tuple[str, np.ndarray]]:
    """Each policy's logged preview grid, from the run with the lowest seed of the first dataset and model, so
    every row shows the same source image."""
    import matplotlib.image

    if finished.empty:
        return []
    first = finished[(finished["dataset"] == finished["dataset"].iloc[0]) & (finished["model"] == finished["model"].iloc[0])]
    out = []
    for augmentation, group in first.groupby("augmentation"):
        run_id = group.sort_values("seed", key=lambda s: s.astype(int))["run_id"].iloc[0]
        path = tracking.download(cfg.tracking, run_id, "augmentation_preview.png", scratch / augmentation.replace("/", "_"))
        if path is not None:
            out.append((augmentation, matplotlib.image.imread(path)))
    return out


def markdown(table: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def build(cfg: DictConfig, parent_run_id: str | None = None, out_root: Path | None = None) -> Path:
    """Write the report files; returns their folder."""
    finished, failed, name = runs_of(cfg, parent_run_id)
    out_dir = Path(out_root or cfg.tracking.get("report_dir") or tracking.RUNS / "reports") / name
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary(finished)
    table.to_csv(out_dir / "summary.csv", index=False)
    failed_table = pd.DataFrame({"run": failed.get("tags.mlflow.runName", pd.Series(dtype=str)),
                                 "error": failed.get("tags.error", pd.Series(dtype=str))})
    text = f"# {name}: overfitting gap by augmentation policy\n\n" + markdown(table)
    if not failed_table.empty:
        text += "\n## Failed combinations\n\n" + markdown(failed_table)
        failed_table.to_csv(out_dir / "failed.csv", index=False)
    (out_dir / "summary.md").write_text(text)

    figures = {"curves.png": plots.curves(histories(cfg, finished), baseline=BASELINE),
               "gaps.png": plots.gaps(table, baseline=BASELINE)}
    with tracking.scratch_dir() as scratch:
        figures["previews.png"] = plots.previews(previews(cfg, finished, Path(scratch)))
    if table[["dataset", "model", "setting"]].drop_duplicates().shape[0] > 1:
        figures["heatmap.png"] = plots.heatmap(table, baseline=BASELINE)
    for file, figure in figures.items():
        figure.savefig(out_dir / file, dpi=110)
    (out_dir / "report.html").write_text(_html(name, table, failed_table, list(figures)))
    return out_dir


def _html(name: str, table: pd.DataFrame, failed: pd.DataFrame, images: list[str]) -> str:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%;margin:1em 0}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(name)}: overfitting gap by augmentation</h1>",
             "<p>gap = validation loss &minus; clean training loss at the best epoch. delta = policy &minus; "
             "<code>none</code>, paired by seed, with a 95% interval; a policy <b>reduces the gap</b> when the whole "
             "interval is below zero. <code>&lt;policy&gt;@offline</code>: trained on a written expansion (augmentation.mode="
             "offline); time_total_s is the run's wall time, expanded_bytes the disk its expansion takes. Image "
             "tasks (task reconstruct or inpaint) have no accuracy: their gap is that of their MSE loss and their "
             "test score psnr (dB, higher is better) and mae. <code>setting</code>: what else the runs of a dataset "
             "and model differ in (a learning rate, <code>dataset.normalize</code>, ...); each policy is compared "
             "with the <code>none</code> of its own setting.</p>",
             table.to_html(index=False, float_format="{:.4f}".format, na_rep="")]
    if not failed.empty:
        parts += ["<h2>Failed combinations</h2>", failed.to_html(index=False)]
    parts += [f"<h2>{file[:-4]}</h2><img src='{file}' alt='{file}'>" for file in images]
    return "\n".join(parts) + "</body></html>\n"


def show(table: pd.DataFrame, name: str) -> None:
    """The summary on the terminal: the columns a person compares first."""
    # The test score of the tasks present: accuracy (classify), psnr (reconstruct, inpaint), or both.
    scores = [m for m in ("accuracy", "psnr") if table.get(f"test_{m}_mean", pd.Series(dtype=float)).notna().any()]
    scores = scores or ["accuracy"]
    table = table.assign(setting=table.get("setting", pd.Series("", index=table.index)).fillna(""))
    cols = ["dataset", "model", "augmentation", "n_seeds", *[f"test_{m}_mean" for m in scores], "gap_loss_mean",
            "delta_gap_loss", "delta_gap_loss_ci_low", "delta_gap_loss_ci_high", *[f"delta_test_{m}" for m in scores],
            "verdict"]
    if table.get("task", pd.Series(dtype=str)).nunique() > 1:
        cols.insert(3, "task")
    if (table["setting"] != "").any():  # the sweep varied more than the policy: which setting each row is
        cols.insert(2, "setting")
    if (table.get("mode", pd.Series(dtype=str)) == "offline").any():  # online vs offline: their cost too
        table = table.assign(expanded_mb=table["expanded_bytes_mean"] / 1e6)
        cols += ["mode", "time_total_s_mean", "expanded_mb"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(f"\n{name}: best-epoch gap (val loss - clean train loss), mean over seeds; delta vs none paired by seed")
        print(table[cols].to_string(index=False))


def main(cfg: DictConfig, parent: str | None = None) -> Path:
    """Build the report and print its summary; what `python -m ablation.report` and the end of a sweep do."""
    parent = parent or cfg.get("parent_run_id")
    finished, _, name = runs_of(cfg, parent)
    if finished.empty:
        print(f"error: experiment_name: no finished runs in MLflow experiment {name!r}", file=sys.stderr)
        raise SystemExit(2)
    out_dir = build(cfg, parent)
    show(pd.read_csv(out_dir / "summary.csv"), name)
    print(f"\nreport: {out_dir / 'report.html'}")
    return out_dir


if __name__ == "__main__":
    from ablation.cli import compose_from_argv

    main(compose_from_argv(sys.argv[1:]))
