"""report.html: one screen of decision first (the verdict per policy as a badge, both deltas with intervals, the
forest plots beside it), then what to do next, then the details (every column, scrolling inside its own box)
and the figures."""
from __future__ import annotations

import html

import pandas as pd

from ablation.report import decide
from ablation.report.figures import VERDICT_COLORS
from ablation.report.markdown import Section

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#24292f}
h1{font-size:1.5em;margin:0 0 .3em}
.rule{font-size:12px;color:#57606a;max-width:100em;margin:.2em 0 .8em}
.decision{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.decision table{border-collapse:collapse;font-size:12.5px}
.decision td,.decision th{padding:2px 7px;border-bottom:1px solid #d0d7de;text-align:left;white-space:nowrap}
.decision td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.flag{color:#9a6700;font-size:12px}
.forest{max-width:720px;width:100%;max-height:85vh;object-fit:contain;object-position:left top}
.details{overflow-x:auto;max-width:100%;border:1px solid #d0d7de;max-height:32em}
.details table{border-collapse:collapse;font-size:12px}
.details td,.details th{border:1px solid #d0d7de;padding:2px 6px;text-align:right;white-space:nowrap}
.details th{position:sticky;top:0;background:#f6f8fa}
img{max-width:100%;margin:.6em 0}
li{margin:.3em 0;font-size:13px}
code{font-size:12px;background:#f6f8fa;padding:1px 4px}
"""


def badge(verdict: str) -> str:
    # `undecided: k/N runs failed` shares the colour of the other undecided rows.
    color = VERDICT_COLORS.get(verdict, VERDICT_COLORS.get(decide.UNFINISHED) if verdict.startswith("undecided:")
                               else "#6e7781")
    return f"<span class='badge' style='background:{color}'>{html.escape(verdict)}</span>"


def _summary(view: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in view.columns)
    body = []
    for _, row in view.iterrows():
        cells = []
        for column, value in row.items():
            text = html.escape(str(value))
            if column == "verdict":
                cells.append(f"<td>{badge(str(value))}</td>")
            elif column == "flags":
                cells.append(f"<td class='flag'>{text}</td>")
            elif column.startswith(("delta", "test", "seeds")):
                cells.append(f"<td class='num'>{text}</td>")
            else:
                cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _advice(todo: list[str]) -> str:
    if not todo:
        return "<p>Every policy is decided and trained to the end: nothing more to run.</p>"
    items = []
    for line in todo:
        text, _, command = line.rpartition(": python ")
        items.append(f"<li>{html.escape(text)}: <code>python {html.escape(command)}</code></li>" if text
                     else f"<li>{html.escape(line)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def html_page(name: str, rule: str, view: pd.DataFrame, table: pd.DataFrame, todo: list[str],
              failed: pd.DataFrame, images: list[str], sections: list[Section] = ()) -> str:
    """The report page, from the same sections as summary.md: the leading ones right after the decision, where
    the sweep asked its question there (dose and response), the others after the details (per-class effects)."""
    details = table.to_html(index=False, float_format="{:.4f}".format, na_rep="", border=0)
    shown = {"forest.png"}

    def render(found) -> list[str]:
        out = []
        for section in found:  # the lines, then the figure
            title, note, lines, empty, image = (section.title, section.note, section.lines, section.empty,
                                                section.image)
            items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
            out += [f"<h2>{html.escape(title)}</h2>", f"<p class='rule'>{html.escape(note)}</p>",
                    f"<ul>{items}</ul>" if lines else f"<p>{html.escape(empty)}</p>" if empty else "",
                    f"<img src='{image}' alt='{image}'>" if image in images else ""]
            shown.add(image)
        return out
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(name)}: which augmentations to use</h1>",
             f"<p class='rule'><b>Rule.</b> {html.escape(rule)}</p>",
             "<div class='decision'>", _summary(view),
             "<img class='forest' src='forest.png' alt='forest.png'>" if "forest.png" in images else "", "</div>",
             *render([s for s in sections if s.leading]),
             "<h2>What to do next</h2>", _advice(todo),
             "<h2>Details</h2><p class='rule'>Every column of summary.csv. gap = validation loss &minus; clean "
             "training loss (gap_estimator says which estimate; delta_gap_* give the others). p_* raw and "
             "adjusted (each endpoint its own family at alpha/2); verdict_rule is what the rule says before failed runs or "
             "unfinished training leave a row undecided; verdict_uncorrected is the verdict without the "
             "multiplicity correction. Accuracy deltas are in points, PSNR in dB; the *_ci_* intervals are raw "
             "95%, delta_test_score_adj_* the selection-adjusted interval behind helps; margin in the score's "
             "unit, margin_relative as a share of none's errors. "
             "<code>&lt;policy&gt;@offline</code>: trained on a written expansion. "
             "<code>synthetic:&lt;ratio&gt;</code>: trained with a generator's images besides the real ones. "
             "<code>setting</code>: what else "
             "the runs of a dataset and model differ in; each policy is compared with the <code>none</code> of "
             "its own setting.</p>",
             f"<div class='details'>{details}</div>",
             *render([s for s in sections if not s.leading])]
    if not failed.empty:
        parts += ["<h2>Failed combinations</h2>", failed.to_html(index=False)]
    parts += [f"<h2>{file[:-4]}</h2><img src='{file}' alt='{file}'>" for file in images if file not in shown]
    return "\n".join(parts) + "</body></html>\n"
