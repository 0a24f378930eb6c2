"""The MLflow UI over a store filled by a real sweep, opened in headless Chromium: the experiment and its runs
appear in the rendered runs table."""
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, browser_or_skip
from helpers import free_port, run_sweep, store_uri, wait_for


@pytest.mark.slow
def test_ui_lists_the_sweeps_runs_in_a_real_browser(tmp_path):
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    uri = store_uri(tmp_path)
    sweep = run_sweep(tmp_path, "experiment=quick", "seed=0")
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ablation.cli.ui", f"port={port}", f"tracking.uri={uri}"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    driver = None
    try:
        address = None
        deadline = time.time() + 120
        while time.time() < deadline and address is None:
            line = server.stdout.readline()
            match = re.search(r"quick: (http://127\.0\.0\.1:\d+/#/experiments/\d+/runs\?workflowType=machine_learning)", line)
            address = match.group(1) if match else None
            assert server.poll() is None, "the UI command exited"
        assert address, "the UI command printed no address for the experiment"

        def healthy() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
            except OSError:
                assert server.poll() is None, "the UI command exited"
                return False

        wait_for(healthy, max(deadline - time.time(), 1), "the UI's server to answer /health", interval=0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1600,1000"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        driver.get(address)
        wanted = ["none/small_cnn/s0", "hflip/small_cnn/s0"]
        # The jobs are nested under the sweep's parent run: expand its row (the button in its name cell).
        expander = "//a[contains(., 'sweep/quick')]/ancestor::div[contains(@class, 'ag-cell-wrapper')]//button"
        try:
            wait_for(lambda: driver.find_elements(By.XPATH, expander), 90, "the sweep's parent run row", interval=1)
            driver.find_element(By.XPATH, expander).click()
            wait_for(lambda: all(name in driver.page_source for name in wanted), 90, f"the runs {wanted} to render",
                     interval=1)
        finally:
            driver.save_screenshot(str(tmp_path / "mlflow_ui.png"))
        page = driver.page_source
        assert "quick" in page
        for name in wanted:
            assert name in page, f"{name} not in the rendered runs table (screenshot: {tmp_path / 'mlflow_ui.png'})"

        # The sweep's parent run: its description is the report's decision, rendered from Markdown.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("quick")
        found = client.search_runs([experiment.experiment_id])
        [parent] = [r for r in found if r.data.tags.get("sweep") == "parent"]
        verdict = next(r.data.tags["verdict"] for r in found if r.info.run_name == "hflip/small_cnn/s0")
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}")
        try:
            wait_for(lambda: "quick: which augmentations to use" in driver.page_source, 90,
                     "the parent run's description", interval=1)
        finally:
            driver.save_screenshot(str(tmp_path / "parent_run.png"))
        # The answer is in the lines shown before "Show more": each verdict with its policies.
        summary = driver.find_element(By.XPATH, "//p[.//*[contains(text(), 'which augmentations to use')]]"
                                                "/following-sibling::p[1]").text
        assert f"{verdict}: hflip" in summary, summary
        # Expanded, the verdict table is rendered from Markdown as an HTML table.
        for more in driver.find_elements(By.XPATH, "//*[normalize-space(text())='Show more']"):
            more.click()
        wait_for(lambda: driver.find_elements(By.XPATH, f"//table//td[contains(., '{verdict}')]"), 30,
                 "the description's verdict table", interval=1)
        driver.save_screenshot(str(tmp_path / "parent_run.png"))
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_ui_binds_to_loopback_unless_told(monkeypatch, capsys, tmp_path):
    """The address handed to `mlflow ui`: 127.0.0.1 by default; another host only when asked, with a warning."""
    import subprocess as sp

    from ablation.cli import ui

    seen = []
    monkeypatch.setattr(sp, "call", lambda command, env=None: seen.append(command) or 0)
    assert ui.call(["port=5999", f"tracking.uri=sqlite:///{tmp_path / 'x.db'}"]) == 0
    assert seen[-1][seen[-1].index("--host") + 1] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err
    assert ui.call(["port=5999", "host=0.0.0.0", f"tracking.uri=sqlite:///{tmp_path / 'x.db'}"]) == 0
    assert seen[-1][seen[-1].index("--host") + 1] == "0.0.0.0"
    assert "no login" in capsys.readouterr().err
