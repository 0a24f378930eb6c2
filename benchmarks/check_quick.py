"""Check what `make bench QUICK=1` wrote: every section and table of the quick pipeline benchmark is there and every
measurement is a number. Timings are the benchmark's business: nothing here asserts a speed.

    python benchmarks/check_quick.py runs/bench/pipeline.md
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

HEADINGS = ("1. Augmentation throughput", "2. Augmentation overhead", "3. Tracking overhead", "4. Decode once",
            "5. Worker", "6. One training epoch on a CIFAR-10-sized set")


def problems(report: str) -> list[str]:
    """What is missing or not a number in the quick benchmark's report (empty when it is whole)."""
    found = [f"section missing: {heading}" for heading in HEADINGS if heading not in report]
    # Section 1: one row per size and worker count, 32 and 128 px only in --quick, each with both ratios.
    rows = [line for line in report.splitlines() if re.match(r"\| (32|128|224) px \| [12] \|", line)]
    if [tuple(r.split(" | ")[:2]) for r in rows] != [("| 32 px", "1"), ("| 32 px", "2"), ("| 128 px", "1"),
                                                      ("| 128 px", "2")]:
        found.append(f"section 1: expected rows 32 px and 128 px at 1 and 2 workers, got {len(rows)} rows")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        try:
            ok = (float(cells[2].replace(",", "")) > 0 and float(cells[9].rstrip("x")) > 0
                  and float(cells[10].rstrip("x")) > 0 and cells[12] in ("PASS", "MISS"))
        except (ValueError, IndexError):
            ok = False
        if not ok:
            found.append(f"section 1: a row without its measurements: {row}")
    if "| ours / IDG | ours / raw |" not in report:
        found.append("section 1: the ratio columns are missing")
    for pattern, what in ((r"epoch-time ratio idg_classic / none = \d+\.\d+", "section 2's ratio"),
                          (r"second / first = \d+\.\d+%", "section 4's ratio")):
        if not re.search(pattern, report):
            found.append(f"{what} is missing")
    if "All targets met." not in report and "Targets missed:" not in report:
        found.append("the targets' summary line is missing")
    return found


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "runs/bench/pipeline.md")
    if not path.is_file():
        print(f"error: {path}: no benchmark report (run make bench QUICK=1 first)", file=sys.stderr)
        return 2
    found = problems(path.read_text())
    for line in found:
        print(f"error: {path}: {line}", file=sys.stderr)
    if not found:
        print(f"{path}: every section and measurement of the quick benchmark is there")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
