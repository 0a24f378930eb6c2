"""summary.md: the report as Markdown, from the same sections as report.html (ablation/report/html.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Section:
    """A lens's part of the report: a note, its lines (or what to say when there are none), its figure and the
    files that hold every value. leading: shown right after the decision (the question a strength sweep asked)
    instead of after the details."""
    title: str
    note: str
    lines: list[str]
    empty: str
    image: str
    files: str
    leading: bool = False


def table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats to 4 decimals, missing values empty)."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def page(name: str, rule: str, view: pd.DataFrame, frame: pd.DataFrame, todo: list[str],
         sections: list[Section], failed: pd.DataFrame) -> str:
    """summary.md: the decision, what to do next, every column, the lenses' sections, the failed combinations."""
    def render(section: Section) -> str:
        return (f"\n## {section.title}\n\n{section.note}\n"
                + ("".join(f"\n- {line}" for line in section.lines) or f"\n{section.empty}")
                + f"\n\n{section.files}\n")

    return (f"# {name}: which augmentations to use\n\n{rule}\n\n" + table(view)
            + "".join(f"\n- {line}" for line in todo)
            + "".join(render(s) for s in sections if s.leading)
            + "\n\n## All columns\n\n" + table(frame)
            + "".join(render(s) for s in sections if not s.leading)
            + ("\n## Failed combinations\n\n" + table(failed) if not failed.empty else ""))
