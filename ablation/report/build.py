"""The decision report of an experiment, read back from MLflow
(mlflow.search_runs and metric histories, never in-process state), written to <paths.reports>/<experiment_name>/:
summary.csv, summary.md, forest.png, curves.png, gaps.png, previews.png, heatmap.png (when several datasets or
models), report.html. The verdicts come from summary.py and decide.py, what to do next from advice.py, the page
from page.py. `ablation-report` (ablation/cli/report.py) builds it, and a sweep
when it ends."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablation import tracking
from ablation.core import errors, guard, paths
from ablation.core.names import BASELINE, BLOCK, KEYS
from ablation.lenses import affinity, class_effects, robustness
from ablation.report import advice, champion, decide, markdown, publish, sequential, strength_levels, summary
from ablation.report import figures as plots
from ablation.report import html as page
from ablation.report.settings import check as check_settings
from ablation.report.view import decision_view, rule

COLUMNS = summary.COLUMNS
VERDICTS = decide.VERDICTS
# The curves the plots draw and the estimators read; val/accuracy only for runs that monitor it.
CURVE_METRICS = ("train_clean/loss", "val/loss", "val/accuracy")
# Params that never set runs apart in the report: the seed (runs are paired over it), where and how a run is
# tracked or executed, and the policy itself (its name is the augmentation column; see settings() for its content).
NOT_SETTINGS = ("seed", "experiment_name", "sweep.", "tracking.", "report.", "paths.", "lenses.", "eval.",
                "augmentation.", "data/", "dataset.cache",
                *(f"trainer.{key}" for key in tracking.EXECUTION_KEYS))
# A policy on the host and on the device are different runs. An offline expansion is told apart by its name
# (<policy>@offline) and compared with none@offline in the same block, so it counts as the host here.
SETTING_KEYS_KEPT = ("augmentation.placement",)
AS_SETTING = {"augmentation.placement": {"offline": "host"}}
CLASS_NOTE = ("Test accuracy per class, policy minus none paired by seed, in points with raw 95% intervals (the "
              "spread floored at one image of the class); the p values of all policies x classes are adjusted "
              "together (Benjamini-Hochberg). An average can hide a class a "
              "policy hurts: a flip or a large rotation can turn one digit into another.")


def runs_of(cfg: DictConfig, parent_run_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(finished runs, one per combination, latest first; failed combinations; experiment name).

    Without a parent: every combination that finished in the experiment, whichever sweep ran it. With one: exactly
    that sweep's combinations (the keys its parent recorded), each from the sweep's own runs, or from the earlier
    run a resumed sweep skipped to; a parent recorded before sweeps kept their keys counts its own runs only."""
    name = tracking.experiment_of(cfg.tracking, parent_run_id) if parent_run_id else cfg.experiment_name
    runs = tracking.load_runs(cfg.tracking, name)
    if runs.empty:
        return runs, runs, name
    runs = runs[runs.get("tags.sweep", pd.Series(index=runs.index, dtype=object)) != "parent"]
    runs = runs.assign(own=False)
    if parent_run_id:
        own = runs.get("tags.mlflow.parentRunId", pd.Series(index=runs.index, dtype=object)) == parent_run_id
        keys = tracking.sweep_keys(cfg.tracking, parent_run_id)
        runs = runs.assign(own=own)[own | (runs["tags.config_hash"].isin(keys) if keys is not None else False)]
    runs = runs.rename(columns={f"tags.{k}": k for k in [*KEYS, "seed"]})
    # The sweep's own run of a combination first (a later sweep may have rerun it with sweep.rerun=true), then the latest.
    runs = runs.sort_values(["own", "start_time"], ascending=False).drop(columns="own")
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
        values = block[params].astype(str).where(block[params].notna())
        values = values.assign(**{f"params.{k}": values[f"params.{k}"].replace(v) for k, v in AS_SETTING.items()
                                  if f"params.{k}" in values})
        by_seed = values.groupby(block["seed"])
        varying = sorted(c for c, n in by_seed.nunique().max().items() if n > 1) if params else []
        if varying:
            setting[block.index] = [" ".join(f"{c[7:]}={v}" for c, v in zip(varying, row) if v == v)
                                    for row in values[varying].itertuples(index=False)]
    if "tags.policy_fingerprint" in finished:
        # One policy name, several contents (a policy file edited between sweeps, a mix given on the command
        # line): each content its own row, told apart by the start of its fingerprint.
        fingerprint = finished["tags.policy_fingerprint"].fillna("").astype(str)
        names = pd.DataFrame({"a": augmentation, "s": setting, "d": finished["dataset"], "m": finished["model"], "f": fingerprint})
        several = names.groupby(["a", "s", "d", "m"])["f"].transform("nunique") > 1
        augmentation = augmentation.where(~several, augmentation + " [" + fingerprint.str[:8] + "]")
    return {"setting": setting, "augmentation": augmentation}


def histories(cfg: DictConfig, finished: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch curves of every finished run, long format: run_id, dataset, model, setting, augmentation, seed,
    metric, epoch, value. The histories are read in bulk (tracking.histories: concurrent requests against a
    server), the rows in the order of the runs, then CURVE_METRICS, then each history's own."""
    wanted, labels = [], []
    for run in finished.itertuples(index=False):
        info = dict(zip(finished.columns, run))
        # val/accuracy is read only where it is what the run monitored (the unfinished flag follows it).
        monitored = info.get("params.trainer.monitor") == "val_accuracy"
        for metric in (m for m in CURVE_METRICS if m != "val/accuracy" or monitored):
            wanted.append((info["run_id"], metric))
            labels.append({"run_id": info["run_id"], **{k: info[k] for k in KEYS}, "seed": info["seed"], "metric": metric})
    rows = [{**label, "epoch": point.step, "value": point.value}
            for label, points in zip(labels, tracking.histories(cfg.tracking, wanted)) for point in points]
    return pd.DataFrame(rows, columns=["run_id", *KEYS, "seed", "metric", "epoch", "value"])


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


def with_affinity(table: pd.DataFrame, finished: pd.DataFrame, measures: pd.DataFrame) -> pd.DataFrame:
    """The table with each policy's mean affinity and diversity over its seeds (ablation.lenses.affinity)."""
    if table.empty or measures.empty:
        return table.assign(affinity=math.nan, diversity=math.nan)
    per_run = finished[["run_id", *KEYS]].merge(measures, on="run_id")
    # Diversity is a ratio that spans orders of magnitude (none's final loss can be near 0): its geometric mean.
    per_run["diversity"] = np.log(per_run["diversity"].astype(float).where(lambda d: d > 0))
    means = per_run.groupby(KEYS, dropna=False)[list(affinity.METRICS)].mean().reset_index()
    means["diversity"] = np.exp(means["diversity"])
    return table.merge(means, on=KEYS, how="left")


def with_robustness(table: pd.DataFrame, robust: pd.DataFrame) -> pd.DataFrame:
    """The table with each policy's mCE against none (ablation.lenses.robustness); a policy trained on a tested
    corruption's family is flagged `trains on <corruptions>`."""
    if table.empty or robust.empty:
        return table.assign(**{c: math.nan for c in robustness.COLUMNS[4:-1]}, trains_on="")
    out = table.merge(robust, on=KEYS, how="left")
    out["trains_on"] = out["trains_on"].fillna("")
    trained = out["trains_on"] != ""
    out.loc[trained, "flags"] = [f"{f}; trains on {t}" if isinstance(f, str) and f else f"trains on {t}"
                                 for f, t in zip(out.loc[trained, "flags"], out.loc[trained, "trains_on"])]
    return out


def build(cfg: DictConfig, parent_run_id: str | None = None, out_root: Path | None = None) -> Path:
    """Read the runs, decide, write the report's files (tables, summary.md, figures, report.html) and publish the
    decision to MLflow; returns the report's folder."""
    finished, failed, name = runs_of(cfg, parent_run_id)
    out_dir = Path(out_root or OmegaConf.select(cfg, "paths.reports", default=None) or paths.folder("reports")) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = {**summary.options(cfg.get("report")), "sequential": schedule_of(cfg, parent_run_id)}
    curves = histories(cfg, finished)
    table = decided(cfg, finished, failed, curves, opts)
    # Whom a policy hurts: per-class deltas against none (classifiers that logged test_class/*); and a strength
    # design's levels.
    per_class = class_effects.effects(finished.assign(task=finished.get("tags.task")), opts["alpha"])
    levels = strength_levels.levels(table, finished)
    failed_table = pd.DataFrame({"run": failed.get("tags.mlflow.runName", pd.Series(dtype=str)),
                                 "error": failed.get("tags.error", pd.Series(dtype=str))})
    table.to_csv(out_dir / "summary.csv", index=False)
    per_class.to_csv(out_dir / "class_effects.csv", index=False)
    if len(levels):
        levels.to_csv(out_dir / "strength.csv", index=False)
    if len(failed_table):
        failed_table.to_csv(out_dir / "failed.csv", index=False)
    todo, view, said = advice.lines(table, name), decision_view(table), rule(opts)
    sections = lens_sections(table, per_class, levels)
    (out_dir / "summary.md").write_text(markdown.page(name, said, view, table, todo, sections, failed_table))
    images = write_figures(cfg, out_dir, table, curves, finished, per_class, levels)
    (out_dir / "report.html").write_text(page.html_page(name, said, view, table, todo, failed_table, images,
                                                        sections))
    # The verdicts where MLflow users look: every decided run's tags, the sweep's description and table.
    tracking.publish(cfg.tracking, parent_run_id, publish.run_tags(finished, table),
                     note=publish.note(name, view, said, todo, out_dir),
                     table=view, table_file=f"{out_dir.name}/decision.json")
    return out_dir


def schedule_of(cfg: DictConfig, parent_run_id: str | None) -> sequential.Schedule | None:
    """The looks of a sweep that added seeds on demand (sweep.seeds=auto), as its parent run recorded them; None
    for a fixed design, and for a report over a whole experiment."""
    if not parent_run_id:
        return None
    looks = (tracking.sweep_definition(cfg.tracking, parent_run_id) or {}).get("sequential")
    return sequential.Schedule(tuple(looks["seeds"]), tuple(looks["alphas"]), looks["kind"]) if looks else None


def look(cfg: DictConfig, parent_run_id: str, schedule: sequential.Schedule,
         made: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sequential sweep after its round `made` (1-based): (the table as its first `made` looks decide it, with
    each row's `stopped`; the finished runs it read)."""
    finished, failed, _ = runs_of(cfg, parent_run_id)
    opts = {**summary.options(cfg.get("report")), "sequential": schedule, "looks_made": made}
    if finished.empty:
        return pd.DataFrame(columns=COLUMNS), finished
    return summary.summary(summary.per_run(finished, histories(cfg, finished), opts["gap"]), opts, failed), finished


def decided(cfg: DictConfig, finished: pd.DataFrame, failed: pd.DataFrame, curves: pd.DataFrame,
            opts: dict) -> pd.DataFrame:
    """summary.csv: one row per policy, decided against its none, with the affinity and robustness lenses."""
    table = summary.summary(summary.per_run(finished, curves, opts["gap"]) if len(finished) else finished, opts,
                            failed)
    measures = affinity.of_runs(cfg, finished) if cfg.get("lenses", {}).get("affinity", True) else pd.DataFrame()
    return with_robustness(with_affinity(table, finished, measures), robustness.mce(finished))


def lens_sections(table: pd.DataFrame, per_class: pd.DataFrame, levels: pd.DataFrame) -> list[markdown.Section]:
    """The lenses that are lists and a figure, for summary.md and report.html alike: a strength design's levels
    right after the decision (the question it asked), whom each policy hurts after the details."""
    sections = []
    if len(levels):
        sections.append(markdown.Section("Dose and response", strength_levels.NOTE, strength_levels.lines(levels),
                                         "", "strength.png", "strength.csv and strength.png hold every level.",
                                         leading=True))
    if len(per_class):
        sections.append(markdown.Section("Per-class effects", CLASS_NOTE, advice.harm_lines(per_class, table),
                                         "No policy significantly hurts any class.", "classes.png",
                                         "class_effects.csv and classes.png hold every cell."))
    return sections


def write_figures(cfg: DictConfig, out_dir: Path, table: pd.DataFrame, curves: pd.DataFrame,
                  finished: pd.DataFrame, per_class: pd.DataFrame, levels: pd.DataFrame) -> list[str]:
    """Every figure the report shows, written as PNG; returns their file names."""
    figures = {"forest.png": plots.forest(table),
               "curves.png": plots.curves(curves, baseline=BASELINE),
               "gaps.png": plots.gaps(table, baseline=BASELINE)}
    with tracking.scratch_dir() as scratch:
        figures["previews.png"] = plots.previews(previews(cfg, finished, Path(scratch)))
    if len(per_class):
        figures["classes.png"] = plots.class_effects(per_class)
    if len(levels):
        figures["strength.png"] = plots.strength_response(levels)
    if np.isfinite(table["mce"].astype(float)).any():
        figures["robustness.png"] = plots.robustness(table, baseline=BASELINE)
    if np.isfinite(table["affinity"].astype(float)).any():
        figures["affinity.png"] = plots.affinity_diversity(table, baseline=BASELINE)
    if table[BLOCK].drop_duplicates().shape[0] > 1:
        figures["heatmap.png"] = plots.heatmap(table, baseline=BASELINE)
    for file, figure in figures.items():
        figure.savefig(out_dir / file, dpi=110)
    return list(figures)


def show(table: pd.DataFrame, name: str, opts: dict | None = None) -> None:
    """The decision on the terminal: the same columns the report opens with, then what to do next."""
    opts = opts or summary.options()
    table = table.assign(setting=table["setting"].astype(object).fillna("") if "setting" in table else "")
    view = decision_view(table)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 40):
        print(f"\n{name}: verdict per policy against none, paired by seed")
        print(view.to_string(index=False))
    print(f"\nrule: {rule(opts)}")
    for line in advice.lines(table, name):
        print(f"\n- {line}")


def make(cfg: DictConfig, parent: str | None = None) -> Path:
    """Check the report settings, build the report and print its summary: what `ablation-report` and the end of a
    sweep do."""
    parent = parent or cfg.get("parent_run_id")
    try:
        check_settings(cfg)
    except errors.ConfigError as exc:
        guard.fail(str(exc))
    finished, _, name = runs_of(cfg, parent)
    if finished.empty:
        guard.fail(f"parent_run_id: no finished runs of the sweep {parent} in MLflow experiment {name!r}" if parent
                   else f"experiment_name: no finished runs in MLflow experiment {name!r}")
    out_dir = build(cfg, parent)
    show(pd.read_csv(out_dir / "summary.csv", keep_default_na=False, na_values=[""]), name,
         {**summary.options(cfg.get("report")), "sequential": schedule_of(cfg, parent)})
    print(f"\nreport: {out_dir / 'report.html'}")
    return out_dir


def register_best(cfg: DictConfig, parent: str, out_dir: Path) -> dict | None:
    """tracking.register_model=NAME: register the MLflow Model of the run the report recommends (champion.choose),
    say which and why, and record it on the sweep's parent run. A registration that cannot be made is a warning:
    the sweep and its report stand."""
    name = cfg.tracking.get("register_model")
    finished, _, _ = runs_of(cfg, parent)
    table = pd.read_csv(out_dir / "summary.csv", keep_default_na=False, na_values=[""])
    try:
        pick = champion.register(cfg.tracking, name, table, finished)
    except errors.ConfigError as exc:
        print(f"warning: {exc}")
        return None
    again = "" if pick["new"] else " (already its newest version)"
    print(f"\nregistered model {name} version {pick['version']}{again}: run {pick['run_id']} ({pick['run_name']})\n"
          f"  why: {pick['reason']}\n  load: models:/{name}/{pick['version']}")
    tracking.log_to_run(cfg, parent, params={"registered_model": f"{name}/{pick['version']}",
                                             "registered_run_id": pick["run_id"],
                                             "registered_because": pick["reason"]})
    return pick
