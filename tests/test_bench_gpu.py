"""`make bench-gpu TINY=1`: the GPU headline's CPU dry run, end to end on JAX with TensorFlow unimportable, as on
the GPU machine (no TensorFlow wheel there). It times a two-run slice of the sweep and projects the full one;
nothing here asserts a speed, only that the measured and projected rows are there, with numbers."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_tiny_dry_run_prints_measured_and_projected_rows_without_tensorflow(tmp_path):
    absent = tmp_path / "no-tensorflow" / "tensorflow"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text("raise ImportError('no TensorFlow here, as on the GPU machine')\n")
    out = tmp_path / "gpu.md"
    env = {**os.environ, "KERAS_BACKEND": "jax", "ABLATION_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(absent.parent), str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--tiny", "--data-dir", str(tmp_path / "data"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out.read_text()
    number = r"[\d,.]+"
    for text in (proc.stdout, report):
        # phase | jobs | runs | start-up s | runs s | report s | exit s | total s | runs/hour | images/s | input wait
        parts = rf"{number} \| {number} \| {number} \| {number} \| {number} \({number} min\) \| {number} \| {number} \| "
        assert re.search(rf"\| sequential: measured \(slice\) \| 1 \| 2 \| {parts}{number}% \|", text), text[-2000:]
        assert re.search(rf"\| sequential: projected \(full sweep\) \| 1 \| 60 \| {parts}{number}% \|", text)
        assert "not judged: a CPU dry run at tiny sizes" in text
    assert "- device: CPU (run tag `device`); Keras backend jax" in report
    assert [row.split(" | ")[0] for row in report.splitlines() if re.match(r"\| (none|hflip) \| 0 \|", row)] == [
        "| none", "| hflip"]
    assert (tmp_path / "gpu-sequential.log").exists()
    assert (tmp_path / "data" / "cifar10-synthetic-512-64.npz").exists()
