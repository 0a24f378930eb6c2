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
from ablation.report import advice, champion, decide, publish, strength_levels, summary
from ablation.report import figures as plots
from ablation.report import html as page
from ablation.report.settings import check as check_settings

COLUMNS = summary.COLUMNS
VERDICTS = decide.VERDICTS
# The curves the plots draw and the estimators read; val/accuracy only for runs that monitor it.
CURVE_METRICS = ("train_clean/loss", "val/loss", "val/accuracy")
# Params that never set runs apart in the report: the seed (runs are paired over it), where and how a run is
# tracked or executed, and the policy itself (its name is the augmentation column; see settings() for its content).
NOT_SETTINGS = ("seed", "experiment_name", "force", "design", "strength", "tracking.", "report.", "paths.", "lenses.", "eval.",
                "augmentation.", "data/", "dataset.cache",
                *(f"trainer.{key}" for key in tracking.EXECUTION_KEYS))
SETTING_KEYS_KEPT = ("augmentation.where",)  # a policy on the host and on the device are different runs
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
    # The sweep's own run of a combination first (a later sweep may have rerun it with force=true), then the latest.
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


def histories(cfg: DictConfig, finished: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch curves of every finished run, long format: run_id, dataset, model, setting, augmentation, seed,
    metric, epoch, value."""
    mlflow_client = tracking.client(cfg.tracking)
    rows = []
    for run in finished.itertuples(index=False):
        info = dict(zip(finished.columns, run))
        # val/accuracy is read only where it is what the run monitored (the unfinished flag follows it).
        monitored = info.get("params.trainer.monitor") == "val_accuracy"
        for metric in (m for m in CURVE_METRICS if m != "val/accuracy" or monitored):
            for point in mlflow_client.get_metric_history(info["run_id"], metric):
                rows.append({"run_id": info["run_id"], **{k: info[k] for k in KEYS}, "seed": info["seed"],
                             "metric": metric, "epoch": point.step, "value": point.value})
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


def decision_view(table: pd.DataFrame) -> pd.DataFrame:
    """The decision columns as a person reads them: the verdict, its flags, both deltas with their intervals,
    the seeds there are and the seeds that would decide; one row per policy, in the table's order."""
    # Which block a row belongs to, where the report has several: the keys that vary.
    where_keys = [k for k in BLOCK if table[k].astype(str).nunique() > 1] if len(table) else []
    offline = (table.get("mode", pd.Series(dtype=str)) == "offline").any()
    generated = table.get("time_generator_s_mean", pd.Series(dtype=float)).notna().any()

    def interval(prefix, r):
        mean, low, high = r[prefix], r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]
        if r["verdict"] == decide.BASELINE_ROW:
            return "0"
        if not math.isfinite(mean):
            return ""
        form = "{:+.3f}" if prefix == "delta_gap" else "{:+.2f}"  # points and dB with two decimals
        shown = form.format(mean)
        return f"{shown} [{form.format(low)}, {form.format(high)}]" if math.isfinite(low) else shown

    def margin(r):
        """The score's margin in both forms: its unit, and relative to none's errors where that applies."""
        value, relative = r.get("margin", math.nan), r.get("margin_relative", math.nan)
        if not isinstance(value, float) or not math.isfinite(value):
            return ""
        unit = {"points": "pt"}.get(r.get("score_unit", ""), r.get("score_unit", ""))
        return f"{value:.2f} {unit}" + (f" ({100 * relative:.0f}% more errors)" if math.isfinite(relative) else "")

    def needed(r):
        n = r["seeds_needed"]
        return "" if not isinstance(n, float) or math.isnan(n) else ">50" if math.isinf(n) else str(int(n))

    def cost(r):
        """What a run of the policy costs, so a small gain can be weighed against a slower run."""
        return {"s per run": _number(r["time_total_s_median"], "{:.1f}"),
                "x none": _number(r["time_vs_baseline"], "{:.2f}"),
                "train img/s": _number(r["images_per_s_mean"], "{:,.0f}")}
    rows = []
    for _, r in table.iterrows():
        metric, unit = r["score_metric"], r.get("score_unit", "")
        unit = f", {unit}" if isinstance(unit, str) and unit else ""
        row = {**{k: r[k] for k in where_keys}, "augmentation": r["augmentation"], "verdict": r["verdict"],
               "flags": r["flags"] if isinstance(r["flags"], str) else "",
               f"delta test {metric}{unit} [raw 95% CI]": interval("delta_test_score", r),
               "margin": margin(r),
               f"delta gap ({r['gap_estimator']}) [raw 95% CI]": interval("delta_gap", r),
               f"test {metric}{unit}": f"{r['test_score_mean']:.3f}" if not unit else f"{r['test_score_mean']:.1f}",
               "seeds": int(r["n_seeds"]), "failed": r.get("failed", ""), "seeds to decide": needed(r), **cost(r)}
        if offline:  # online vs offline: the images written too
            row.update(mode=r["mode"],
                       expanded_mb=f"{r['expanded_bytes_mean'] / 1e6:.1f}" if r["expanded_bytes_mean"] == r["expanded_bytes_mean"] else "")
        if generated:  # generated training images: what the generator cost and how recognisable its images are
            row.update({"generator s": _number(r["time_generator_s_mean"], "{:.0f}"),
                        "sample affinity": _number(r["sample_affinity_mean"], "{:.2f}")})
        rows.append(row)
    view = pd.DataFrame(rows)
    # A sweep that decided every row plans no further seeds, one without failures has nothing to count: columns
    # that would be empty are left out.
    if len(view) and (view["seeds to decide"] == "").all():
        view = view.drop(columns="seeds to decide")
    if len(view) and view["failed"].astype(str).str.match(r"^(0/\d+)?$|^nan$").all():
        view = view.drop(columns="failed")
    return view


def _number(value, form: str) -> str:
    return form.format(value) if isinstance(value, float) and math.isfinite(value) else ""


def markdown(table: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def rule(opts: dict) -> str:
    given = opts["margin"]
    accuracy = (f"{given['accuracy']:g} points of accuracy" if given.get("accuracy") is not None
                else f"{100 * given['relative']:g}% more errors than none")
    return decide.RULE.format(correction=decide.CORRECTION_NAMES[opts["correction"]], half=opts["alpha"] / 2,
                              margin=f"the margin (report.margin: {accuracy}; {given['psnr']:g} dB of PSNR)")


def build(cfg: DictConfig, parent_run_id: str | None = None, out_root: Path | None = None) -> Path:
    """Write the report files; returns their folder."""
    finished, failed, name = runs_of(cfg, parent_run_id)
    out_dir = Path(out_root or OmegaConf.select(cfg, "paths.reports", default=None) or paths.folder("reports")) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = summary.options(cfg.get("report"))
    curves = histories(cfg, finished)
    table = summary.summary(summary.per_run(finished, curves, opts["gap"]) if len(finished) else finished, opts,
                            failed)
    measures = affinity.of_runs(cfg, finished) if cfg.get("lenses", {}).get("affinity", True) else pd.DataFrame()
    table = with_affinity(table, finished, measures)
    table = with_robustness(table, robustness.mce(finished))
    table.to_csv(out_dir / "summary.csv", index=False)
    failed_table = pd.DataFrame({"run": failed.get("tags.mlflow.runName", pd.Series(dtype=str)),
                                 "error": failed.get("tags.error", pd.Series(dtype=str))})
    todo = advice.lines(table, name)
    # Whom a policy hurts: per-class deltas against none (classifiers that logged test_class/*).
    per_class = class_effects.effects(finished.assign(task=finished.get("tags.task")), opts["alpha"])
    per_class.to_csv(out_dir / "class_effects.csv", index=False)
    harms = advice.harm_lines(per_class, table)
    text = (f"# {name}: which augmentations to use\n\n{rule(opts)}\n\n" + markdown(decision_view(table))
            + "".join(f"\n- {line}" for line in todo) + "\n\n## All columns\n\n" + markdown(table))
    if len(per_class):
        text += ("\n## Per-class effects\n\n" + (CLASS_NOTE + "\n")
                 + ("".join(f"\n- {line}" for line in harms) or "\nNo policy significantly hurts any class.")
                 + "\n\nclass_effects.csv and classes.png hold every cell.\n")
    doses = strength_levels.levels(table, finished)
    strength_lines = strength_levels.lines(doses) if len(doses) else []
    if len(doses):
        doses.to_csv(out_dir / "strength.csv", index=False)
        text += ("\n## Dose and response\n\n" + strength_levels.NOTE + "\n" + "".join(f"\n- {line}" for line in strength_lines)
                 + "\n\nstrength.csv and strength.png hold every level.\n")
    if not failed_table.empty:
        text += "\n## Failed combinations\n\n" + markdown(failed_table)
        failed_table.to_csv(out_dir / "failed.csv", index=False)
    (out_dir / "summary.md").write_text(text)

    figures = {"forest.png": plots.forest(table),
               "curves.png": plots.curves(curves, baseline=BASELINE),
               "gaps.png": plots.gaps(table, baseline=BASELINE)}
    with tracking.scratch_dir() as scratch:
        figures["previews.png"] = plots.previews(previews(cfg, finished, Path(scratch)))
    if len(per_class):
        figures["classes.png"] = plots.class_effects(per_class)
    if len(doses):
        figures["strength.png"] = plots.strength_response(doses)
    if np.isfinite(table["mce"].astype(float)).any():
        figures["robustness.png"] = plots.robustness(table, baseline=BASELINE)
    if np.isfinite(table["affinity"].astype(float)).any():
        figures["affinity.png"] = plots.affinity_diversity(table, baseline=BASELINE)
    if table[["dataset", "model", "setting"]].drop_duplicates().shape[0] > 1:
        figures["heatmap.png"] = plots.heatmap(table, baseline=BASELINE)
    for file, figure in figures.items():
        figure.savefig(out_dir / file, dpi=110)
    sections = []
    if len(per_class):  # whom each policy hurts
        sections.append(("Per-class effects", CLASS_NOTE, harms, "No policy significantly hurts any class.",
                         "classes.png"))
    # A strength design asked how much of a policy to use: its answer right after the decision.
    leading = [("Dose and response", strength_levels.NOTE, strength_lines, "", "strength.png")] if len(doses) else []
    (out_dir / "report.html").write_text(page.html_page(name, rule(opts), decision_view(table), table, todo,
                                                   failed_table, list(figures), sections=sections,
                                                   leading=leading))
    # The verdicts where MLflow users look: every decided run's tags, the sweep's description and table.
    view = decision_view(table)
    tracking.publish(cfg.tracking, parent_run_id, publish.run_tags(finished, table),
                     note=publish.note(name, view, rule(opts), todo, out_dir, markdown),
                     table=view, table_file=f"{out_dir.name}/decision.json")
    return out_dir


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
         summary.options(cfg.get("report")))
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
