"""`make bench QUICK=1`: the benchmark runs in --quick mode, prints its tables and writes them. Timings are the
benchmark's business: nothing here asserts a speed, only that every measurement is there and is a number."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_prints_and_writes_every_table(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, "benchmarks/pipeline.py", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out.read_text()
    for text in (proc.stdout, report):
        for heading in ("1. Augmentation throughput", "2. Augmentation overhead", "3. Tracking overhead",
                        "4. Decode once", "5. Worker", "6. One training epoch on a CIFAR-10-sized set"):
            assert heading in text, heading
    # Section 1: one row per size and worker count, 32 and 128 px only in --quick, each with both ratios.
    rows = [line for line in report.splitlines() if re.match(r"\| (32|128|224) px \| [12] \|", line)]
    assert [tuple(r.split(" | ")[:2]) for r in rows] == [("| 32 px", "1"), ("| 32 px", "2"), ("| 128 px", "1"),
                                                         ("| 128 px", "2")]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        ours, ratio_idg, ratio_raw = cells[2], cells[9], cells[10]
        assert float(ours.replace(",", "")) > 0
        assert float(ratio_idg.rstrip("x")) > 0 and float(ratio_raw.rstrip("x")) > 0
        assert cells[12] in ("PASS", "MISS")
    assert "| ours / IDG | ours / raw |" in proc.stdout
    assert re.search(r"epoch-time ratio idg_classic / none = \d+\.\d+", report)
    assert re.search(r"second / first = \d+\.\d+%", report)
    assert "All targets met." in report or "Targets missed:" in report


def test_the_overhead_tables_give_each_sweep_its_ratio_to_the_earlier_settings():
    """benchmarks/overhead.py's report from measured times (`make bench QUICK=1` runs the measurement itself)."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("benchmark_overhead", ROOT / "benchmarks" / "overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    times = {"default": [3.0, 5.0], "earlier_default": [6.0, 6.0], "plain Keras": [4.0, 4.0]}
    sweeps = {"earlier settings": 90.0, "current defaults": 60.0, "current defaults, packed": 40.0}
    text = bench.render(times, sweeps, SimpleNamespace(repeats=2, policies="none,shift", seeds=3), epochs=12)
    assert "| default | 4.00 | 1.00 | 1.00 |" in text and "| earlier_default | 6.00 | 1.50 | 1.50 |" in text
    assert "| current defaults | 60.0 | 360 | 1.50x |" in text  # 6 runs in a minute
    assert "| current defaults, packed | 40.0 | 540 | 2.25x |" in text
    assert re.search(r"packed \(\d+ jobs at once\) against one job at a time: 1\.50x the runs per hour", text)
