"""The report's matplotlib figures (a run's own figures are ablation/training/figures.py). Figures are built with matplotlib.figure.Figure, not pyplot,
so nothing is registered globally, nothing leaks between runs and no display is needed."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ablation.report import decide
from ablation.report.sequential import shown_intervals


def _label(row) -> str:
    """dataset/model, and the setting where the sweep varied one (report.settings)."""
    setting = row.get("setting", "")
    return f"{row['dataset']}/{row['model']}" + (f" {setting}" if isinstance(setting, str) and setting else "")


def _with_setting(table):
    """The table with a `setting` column of strings (empty where a table has none, or read back from a CSV)."""
    return table.assign(setting=table["setting"].fillna("").astype(str) if "setting" in table else "")


def curves(history, baseline: str = "none") -> Figure:
    """Per policy: clean-train and validation loss over epochs, mean across seeds with a min-max band, the
    baseline's curves dashed behind. The vertical distance between the two is the overfitting gap."""
    history = _with_setting(history)
    combos = (history[["dataset", "model", "setting", "augmentation"]].drop_duplicates().to_dict("records")
              if len(history) else [])
    cols = min(4, max(len(combos), 1))
    rows = max(math.ceil(len(combos) / cols), 1)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows + 0.5), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    colors = {"train_clean/loss": "tab:blue", "val/loss": "tab:orange"}
    for ax, combo in zip(axes, combos):
        for augmentation, style, alpha in ((baseline, "--", 0.5), (combo["augmentation"], "-", 1.0)):
            if augmentation == baseline and combo["augmentation"] == baseline and style == "--":
                continue
            part = history[(history["dataset"] == combo["dataset"]) & (history["model"] == combo["model"])
                           & (history["setting"] == combo["setting"]) & (history["augmentation"] == augmentation)]
            for metric, color in colors.items():
                stats = part[part["metric"] == metric].groupby("epoch")["value"].agg(["mean", "min", "max"])
                if stats.empty:
                    continue
                label = f"{metric.split('/')[0]} ({'baseline' if style == '--' else 'policy'})"
                ax.plot(stats.index, stats["mean"], style, color=color, alpha=alpha, label=label)
                if style == "-":
                    ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
        setting = f"\n{combo['setting']}" if combo["setting"] else ""  # a line of its own: settings run long
        ax.set_title(f"{combo['augmentation']}  ({combo['dataset']}/{combo['model']}){setting}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(combos):]:
        ax.set_axis_off()
    if combos:
        fig.axes[0].legend(fontsize=7)
    fig.suptitle("loss per epoch: clean train (blue), validation (orange); band = seeds' range; dashed = none")
    return fig


VERDICT_COLORS = {decide.HELPS: "#1a7f37", decide.COST_UNCLEAR: "#7d8b2a", decide.EQUIVALENT: "#0969da",
                  decide.UNDECIDED: "#6e7781", decide.UNFINISHED: "#9a6700",
                  decide.WIDENS: "#bc4c00", decide.COSTS: "#8250df", decide.HURTS: "#cf222e",
                  decide.BASELINE_ROW: "#24292f"}


def _row_labels(table) -> list[str]:
    several = table[["dataset", "model", "setting"]].drop_duplicates().shape[0] > 1
    return [f"{r['augmentation']} ({_label(r)})" if several else r["augmentation"] for _, r in table.iterrows()]


def forest(summary) -> Figure:
    """The decision at a glance: delta test score and delta gap per policy (policy - none, paired by seed), each
    with its 95% interval, side by side on the same rows; the baseline (0) marked, and on the score side the
    margin a recommended policy must stay within (the table's `margin`, when one block). Points coloured by
    verdict, rows in the report's order; deltas of accuracy in points."""
    table = _with_setting(summary).reset_index(drop=True)
    n = max(len(table), 1)
    fig = Figure(figsize=(9, 0.26 * n + 1.4), layout="constrained")
    score_ax, gap_ax = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(table))[::-1]
    colors = [VERDICT_COLORS.get(v, "#6e7781") for v in table["verdict"]]
    metric = table["score_metric"].iloc[0] if len(table) and table["score_metric"].nunique() == 1 else "score"
    kind, said = shown_intervals(table)  # a sequential sweep: each row's interval at the look it stopped at
    for ax, prefix, title in ((score_ax, "delta_test_score", f"delta test {metric}{' (points)' if metric == 'accuracy' else ' (dB)' if metric == 'psnr' else ''} (higher = better)"),
                              (gap_ax, "delta_gap", "delta gap (lower = less overfitting)")):
        mean = table[prefix].astype(float).to_numpy()
        low = table[f"{prefix}_{kind}_low"].astype(float).to_numpy()
        high = table[f"{prefix}_{kind}_high"].astype(float).to_numpy()
        ok = np.isfinite(low) & np.isfinite(high)
        ax.hlines(y[ok], low[ok], high[ok], colors=np.array(colors, dtype=object)[ok], linewidth=2)
        ax.scatter(mean, y, c=colors, zorder=3, s=28)
        ax.axvline(0, color="black", linewidth=1, label="none (baseline)")
        ax.set_xlabel(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    margins = table["margin"].astype(float).dropna().unique() if "margin" in table and metric != "score" else []
    if len(margins) == 1:
        unit = table["score_unit"].iloc[0] if "score_unit" in table else ""
        score_ax.axvspan(-margins[0], 0, color="tab:green", alpha=0.08, label=f"margin ({margins[0]:.2g} {unit})")
    score_ax.set_yticks(y, _row_labels(table), fontsize=8)
    score_ax.legend(fontsize=7, loc="best")
    for verdict, color in VERDICT_COLORS.items():
        if verdict in set(table["verdict"]):
            gap_ax.scatter([], [], c=color, label=verdict, s=28)
    gap_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: it hides no interval
    fig.suptitle(f"policy - none, paired by seed, with {said}", fontsize=10)
    return fig


def gaps(summary, baseline: str = "none") -> Figure:
    """The gap estimate per policy, mean over seeds with a 95% interval of that mean; the baseline marked;
    points coloured by verdict."""
    from scipy import stats

    table = _with_setting(summary).sort_values("gap_mean", ascending=False).reset_index(drop=True)
    fig = Figure(figsize=(8, 0.35 * len(table) + 1.5), layout="constrained")
    ax = fig.subplots()
    n = table["n_seeds"].clip(lower=1).astype(float)
    half = [stats.t.ppf(0.975, k - 1) * s / math.sqrt(k) if k > 1 and s == s else 0.0
            for k, s in zip(n, table["gap_std"])]
    colors = [VERDICT_COLORS.get(v, "#6e7781") for v in table["verdict"]]
    ax.errorbar(table["gap_mean"], range(len(table)), xerr=half, fmt="none", ecolor="black", capsize=3, lw=1)
    ax.scatter(table["gap_mean"], range(len(table)), c=colors, zorder=3)
    for i, value in enumerate(table.loc[table["augmentation"] == baseline, "gap_mean"]):
        ax.axvline(value, color="tab:gray", linestyle="--", linewidth=1, label="none (baseline)" if i == 0 else None)
    ax.set_yticks(range(len(table)), _row_labels(table), fontsize=8)
    estimator = table["gap_estimator"].iloc[0] if len(table) else ""
    ax.set_xlabel(f"gap ({estimator}): val loss - clean train loss (lower = less overfitting)")
    ax.grid(axis="x", alpha=0.3)
    if (table["augmentation"] == baseline).any():
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("overfitting gap per policy, mean over seeds (bars: raw 95% interval; colour: verdict)")
    return fig


def previews(rows) -> Figure:
    """One row per policy: its logged preview grid (the same source image, then augmented versions)."""
    fig = Figure(figsize=(10, 1.3 * max(len(rows), 1) + 0.3), layout="constrained")
    axes = fig.subplots(max(len(rows), 1), 1, squeeze=False)[:, 0]
    for ax, (name, image) in zip(axes, rows):
        ax.imshow(image)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    if not rows:
        axes[0].set_axis_off()
    return fig


def heatmap(summary, baseline: str = "none") -> Figure:
    """Delta gap (policy - none, paired by seed) for each dataset x model and policy; blue = gap reduced."""
    table = _with_setting(summary)
    table = table[table["augmentation"] != baseline]
    table = table.assign(cell=[_label(r) for _, r in table.iterrows()])
    grid = table.pivot_table(index="cell", columns="augmentation", values="delta_gap")
    fig = Figure(figsize=(4.0 + 0.7 * max(grid.shape[1], 1), 2.0 + 0.5 * max(grid.shape[0], 1)), layout="constrained")
    ax = fig.subplots()
    limit = np.nanmax(np.abs(grid.to_numpy())) if grid.size and np.isfinite(grid.to_numpy()).any() else 1.0
    image = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        if np.isfinite(value):
            ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(value) > limit / 2 else "black")
    fig.colorbar(image, ax=ax, label="delta gap (loss) vs none")
    fig.suptitle("delta gap vs none (blue: reduced)")
    return fig


def class_effects(effects) -> Figure:
    """Delta test accuracy per class (points, policy - none paired by seed), one panel per dataset x model x
    setting; * marks cells significant after Benjamini-Hochberg over all cells. Red: the policy hurts the class."""
    blocks = list(effects.groupby(["dataset", "model", "setting"], sort=False)) if len(effects) else []
    fig = Figure(figsize=(3.5 + 0.55 * max((b["class"].nunique() for _, b in blocks), default=4),
                          1.2 + sum(0.35 * b["augmentation"].nunique() + 0.8 for _, b in blocks)),
                 layout="constrained")
    axes = fig.subplots(max(len(blocks), 1), 1, squeeze=False)[:, 0]
    limit = float(np.nanmax(np.abs(effects["delta_points"]))) if len(effects) else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    for ax, (key, block) in zip(axes, blocks):
        classes = list(dict.fromkeys(block["class"]))
        grid = block.pivot_table(index="augmentation", columns="class", values="delta_points", sort=False)[classes]
        significant = block.pivot_table(index="augmentation", columns="class", values="significant", aggfunc="max",
                                        sort=False)[classes]
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(classes)), classes, fontsize=8)
        ax.set_yticks(range(len(grid.index)), grid.index, fontsize=8)
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                star = "*" if bool(significant.iloc[i, j]) else ""
                ax.text(j, i, f"{value:+.1f}{star}", ha="center", va="center", fontsize=6.5,
                        color="white" if abs(value) > limit / 2 else "black")
        ax.set_title(" / ".join(str(k) for k in key if k), fontsize=9)
        ax.set_xlabel("class")
        fig.colorbar(image, ax=ax, label="delta accuracy (points)")
    if not blocks:
        axes[0].set_axis_off()
    fig.suptitle("per-class delta test accuracy vs none (red: hurts; * significant, BH over all cells)", fontsize=10)
    return fig


def affinity_diversity(summary, baseline: str = "none") -> Figure:
    """Each policy at (affinity, diversity), coloured by its delta test score against none; none sits at (1, 1).
    Gontijo-Lopes et al. (ICLR 2021): the policies that help score high on both."""
    table = _with_setting(summary)
    points = table[(table["augmentation"] != baseline) & np.isfinite(table["affinity"].astype(float))
                   & np.isfinite(table["diversity"].astype(float))]
    several = table[["dataset", "model", "setting"]].astype(str).drop_duplicates().shape[0] > 1
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.subplots()
    scores = points["delta_test_score"].astype(float).to_numpy()
    limit = float(np.nanmax(np.abs(scores))) if len(points) and np.isfinite(scores).any() else 1.0
    dots = ax.scatter(points["affinity"], points["diversity"], c=scores, cmap="RdBu", vmin=-limit or -1,
                      vmax=limit or 1, s=60, edgecolors="#24292f", linewidths=0.6, zorder=3)
    for _, r in points.iterrows():
        ax.annotate(_label(r) if several else r["augmentation"], (r["affinity"], r["diversity"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.scatter([1], [1], marker="*", s=160, color="#24292f", zorder=4, label=f"{baseline} (1, 1)")
    ax.axvline(1, color="#d0d7de", lw=0.8, zorder=1)
    ax.axhline(1, color="#d0d7de", lw=0.8, zorder=1)
    ax.set_xlabel("affinity (none model's val accuracy on augmented / clean val)")
    # A ratio of losses: when none fits its training data almost perfectly, strong policies lie orders of
    # magnitude above it.
    ax.set_yscale("log")
    ax.set_ylabel("diversity (final training loss / none's, log scale)")
    ax.legend(loc="best", fontsize=8)
    fig.colorbar(dots, ax=ax, label=f"delta test {points['score_metric'].iloc[0] if len(points) else 'score'} vs none")
    fig.suptitle("affinity and diversity (blue: higher test score than none)", fontsize=10)
    return fig


def robustness(summary, baseline: str = "none") -> Figure:
    """mCE per policy (corruption errors relative to none of the same seed; 1 = as many errors as none) with its
    95% interval; policies trained on a tested corruption's family are marked."""
    table = _with_setting(summary)
    rows = table[(table["augmentation"] != baseline) & np.isfinite(table["mce"].astype(float))]
    rows = rows.sort_values("mce", ascending=False)
    fig = Figure(figsize=(7.0, 1.4 + 0.32 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    labels = _row_labels(rows)
    y = np.arange(len(rows))
    means = rows["mce"].astype(float).to_numpy()
    low, high = rows["mce_ci_low"].astype(float).to_numpy(), rows["mce_ci_high"].astype(float).to_numpy()
    err = np.vstack([np.nan_to_num(means - low), np.nan_to_num(high - means)])
    colors = ["#1a7f37" if h < 1 else "#cf222e" if lo > 1 else "#6e7781" for lo, h in zip(low, high)]
    for k, color in enumerate(colors):
        ax.errorbar(means[k], y[k], xerr=err[:, k:k + 1], fmt="o", color=color, elinewidth=2, capsize=3)
    marked = [f"{label}  (trains on {t})" if isinstance(t, str) and t else label
              for label, t in zip(labels, rows["trains_on"])]
    ax.set_yticks(y, marked, fontsize=8)
    ax.axvline(1.0, color="#24292f", lw=1)
    ax.set_xlabel(f"mCE relative to {baseline} (< 1: fewer errors under corruption)")
    fig.suptitle("robustness to common corruptions, paired by seed (raw 95% intervals)", fontsize=10)
    return fig


def strength_response(doses) -> Figure:
    """Delta test score and delta gap against strength (ablation/report/strength_levels.py), one line per policy with 95% intervals;
    level 0 is none. The best supported level of each policy is ringed."""
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    several = doses[["dataset", "model", "setting"]].astype(str).drop_duplicates().shape[0] > 1
    for k, (key, family) in enumerate(doses.groupby(["dataset", "model", "setting", "policy"], dropna=False)):
        name = f"{key[3]} ({'/'.join(str(v) for v in key[:3] if str(v))})" if several else key[3]
        chosen = family[family["best"].astype(bool)]
        for ax, prefix in zip(axes, ("delta_test_score", "delta_gap")):
            x = family["strength"].astype(float).to_numpy() + 0.012 * k  # intervals of policies side by side
            mean = family[prefix].astype(float).to_numpy()
            err = np.vstack([np.nan_to_num(mean - family[f"{prefix}_ci_low"].astype(float).to_numpy()),
                             np.nan_to_num(family[f"{prefix}_ci_high"].astype(float).to_numpy() - mean)])
            line = ax.errorbar(x, mean, yerr=err, fmt="-o", capsize=3, ms=4, label=name)
            if len(chosen):
                ax.plot(chosen["strength"] + 0.012 * k, chosen[prefix], "o", ms=13, mfc="none",
                        mec=line[0].get_color(), mew=1.6)
    metric = doses["score_metric"].iloc[0] if len(doses) else "score"
    estimator = doses["gap_estimator"].dropna().iloc[0] if doses["gap_estimator"].notna().any() else "gap"
    for ax, label in zip(axes, (f"delta test {metric} vs none (higher = better)",
                                f"delta gap ({estimator}) vs none (lower = less overfitting)")):
        ax.axhline(0, color="#24292f", lw=0.8)
        ax.set_xlabel("strength (1 = the policy as written; 0 = none)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("dose and response: each level paired by seed against none (raw 95% intervals; ring = best level "
                 "that helps)", fontsize=10)
    return fig
