"""The verdicts where MLflow users look: the decision summary as the sweep's parent run description (Markdown,
`mlflow.note.content`) and the tags `verdict` and `delta_test_score` of every run the report decided, so the runs
table sorts and filters by them (`tags.verdict = 'helps'`). Plain text and tables here; tracking.publish writes."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ablation.core.names import KEYS
from ablation.report import markdown, summary


def run_tags(finished: pd.DataFrame, table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """run_id -> {"verdict", "delta_test_score"} of its row in the report table (one row per policy)."""
    if finished.empty or table.empty:
        return {}
    rows = summary.key_text(table).assign(verdict=table["verdict"], delta_test_score=table["delta_test_score"])
    merged = summary.key_text(finished).assign(run_id=finished["run_id"]).merge(rows, on=KEYS, how="inner")
    return {r.run_id: {"verdict": str(r.verdict), "delta_test_score": _number(r.delta_test_score)}
            for r in merged.itertuples()}


def _number(value) -> str:
    value = float(value)
    return f"{value:+.4f}" if math.isfinite(value) else ""


def note(name: str, view: pd.DataFrame, rule: str, todo: list[str], report_dir: Path) -> str:
    """The parent run's description: what was decided, the verdict table, what to do next, where the report is.
    view: ablation.report.view.decision_view()."""
    # The answer first: the UI shows a description's first lines until "Show more" is clicked.
    grouped = view[view["verdict"] != "baseline"].groupby("verdict", sort=False)["augmentation"]
    answer = " · ".join(f"**{verdict}**: {', '.join(map(str, names))}" for verdict, names in grouped)
    lines = [f"**{name}: which augmentations to use** (against `none`, paired by seed)", "",
             answer or "no policy besides `none` finished", "", markdown.table(view), f"**Rule.** {rule}", ""]
    if todo:
        lines += ["**What to do next**", "", *[f"- {line}" for line in todo], ""]
    lines += [f"**The full report**: `{report_dir.name}/report.html` in this run's artifacts (figures, per-class "
              f"effects, every column), written to `{report_dir / 'report.html'}`. The table is also "
              f"`{report_dir.name}/decision.json` here; every run carries its row's `verdict` and "
              "`delta_test_score` as tags (runs table: `tags.verdict = 'helps'`)."]
    return "\n".join(lines)
