"""Under CI a skipped test fails the run (tests/conftest.py: pytest_sessionfinish), so a green CI means every
test ran; outside CI a skip stays a skip."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("ci,code", [("1", 1), ("", 0)])
def test_a_skip_fails_the_run_only_under_ci(tmp_path, ci, code):
    (tmp_path / "test_probe.py").write_text("import pytest\n\ndef test_skips():\n    pytest.skip('no browser')\n\n"
                                            "def test_passes():\n    assert True\n")
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             str(tmp_path / "test_probe.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == code, result.stdout[-2000:]
    assert ("skipped under CI: " in result.stdout) == bool(ci), result.stdout[-2000:]
