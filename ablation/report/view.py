"""The decision as a person reads it: one row per policy with its verdict, flags, both deltas with their intervals,
the seeds there are and the seeds that would decide, and the rule that decided, in words. The terminal, summary.md,
report.html and the MLflow parent run all show this view."""
from __future__ import annotations

import math

import pandas as pd

from ablation.core.names import BLOCK
from ablation.report import decide
from ablation.report.sequential import shown_intervals


def decision_view(table: pd.DataFrame) -> pd.DataFrame:
    """The decision columns as a person reads them: the verdict, its flags, both deltas with their intervals,
    the seeds there are and the seeds that would decide; one row per policy, in the table's order."""
    # Which block a row belongs to, where the report has several: the keys that vary.
    where_keys = [k for k in BLOCK if table[k].astype(str).nunique() > 1] if len(table) else []
    offline = (table.get("mode", pd.Series(dtype=str)) == "offline").any()
    generated = table.get("time_generator_s_mean", pd.Series(dtype=float)).notna().any()

    # Seeds on demand (sweep.seeds=auto): each row shows the repeated confidence interval of the look it stopped at
    # (level 1 - that look's alpha), the one valid whatever made it stop, and the look.
    kind, _ = shown_intervals(table)
    sequential = kind == "rci"
    label = "[CI at its look]" if sequential else "[raw 95% CI]"

    def interval(prefix, r):
        mean, low, high = r[prefix], r[f"{prefix}_{kind}_low"], r[f"{prefix}_{kind}_high"]
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
               f"delta test {metric}{unit} {label}": interval("delta_test_score", r),
               "margin": margin(r),
               f"delta gap ({r['gap_estimator']}) {label}": interval("delta_gap", r),
               f"test {metric}{unit}": f"{r['test_score_mean']:.3f}" if not unit else f"{r['test_score_mean']:.1f}",
               "seeds": int(r["n_seeds"]), "failed": r.get("failed", ""), "seeds to decide": needed(r), **cost(r)}
        if sequential and r["verdict"] != decide.BASELINE_ROW:
            row.update(look=f"{int(r['look'])}/{int(r['looks'])}" if r["look"] == r["look"] else "",
                       stopped=r["stopped"] if isinstance(r["stopped"], str) else "")
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


def rule(opts: dict) -> str:
    given = opts["margin"]
    accuracy = (f"{given['accuracy']:g} points of accuracy" if given.get("accuracy") is not None
                else f"{100 * given['relative']:g}% more errors than none")
    said = decide.RULE.format(correction=decide.CORRECTION_NAMES[opts["correction"]], half=opts["alpha"] / 2,
                              margin=f"the margin (report.margin: {accuracy}; {given['psnr']:g} dB of PSNR)")
    plan = opts.get("sequential")
    if plan is not None:
        looks = ", ".join(f"{n} ({a:.4f})" for n, a in zip(plan.seeds, plan.alphas))
        said += (f" Seeds on demand (sweep.seeds=auto): the rule looked at {looks} seeds (alpha of each look, "
                 f"{plan.kind}-type spending, summing to {plan.alpha:g}), each time on the policies still open at that "
                 f"look's alpha in place of alpha; a policy keeps what the look it stopped at said, with that look's "
                 f"repeated confidence intervals (docs/decision.md, Sequential seeds).")
    return said
