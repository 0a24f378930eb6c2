"""The benchmarks' reports: `make bench-check` runs the quick pipeline benchmark and checks its tables (its own CI
step); here, that check and the overhead tables. Timings are the benchmark's business: nothing asserts a speed."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_check", ROOT / "benchmarks" / "check_quick.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def test_the_quick_benchmark_check_accepts_a_whole_report_and_names_what_is_missing(tmp_path):
    """`make bench-check` (its own CI step, outside the test suite) runs `make bench QUICK=1`'s benchmark and
    this check on what it wrote."""
    check = _check()
    rows = [f"| {size} px | {workers} | 1,234 | 1 | 2 | 3 | 4 | 5 | 6 | 1.50x | 2.10x | 7 | PASS |"
            for size in (32, 128) for workers in (1, 2)]
    whole = "\n".join([*check.HEADINGS, "| size | workers | ours / IDG | ours / raw |", *rows,
                       "epoch-time ratio idg_classic / none = 1.07", "second / first = 12.5%", "All targets met."])
    assert check.problems(whole) == []
    broken = whole.replace(check.HEADINGS[3], "").replace(rows[1], rows[1].replace("1,234", "n/a"))
    found = check.problems(broken)
    assert any("4. Decode once" in line for line in found) and any("without its measurements" in line for line in found)
    (tmp_path / "bench.md").write_text(whole)
    assert check.main([str(tmp_path / "bench.md")]) == 0
    assert check.main([str(tmp_path / "missing.md")]) == 2


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
