"""Screenshot of a sweep's parent run in the MLflow UI (docs/images/mlflow_parent_run.png): its description is
the report's decision. Starts `python -m ablation.cli.ui` over the store, opens the latest sweep's parent run of the
experiment in headless Chromium, expands the description, closes the assistant panel, saves the PNG.

    python scripts/ui_screenshot.py EXPERIMENT OUT.png [ablation.cli.ui overrides, e.g. tracking.uri=sqlite:///...]
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(experiment: str, out: str, *overrides: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    port = 5077
    server = subprocess.Popen([sys.executable, "-m", "ablation.cli.ui", f"port={port}", *overrides], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    driver = None
    try:
        address = None
        while address is None:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                raise SystemExit("the UI command exited")
            match = re.search(rf"{re.escape(experiment)}: (http://\S+/#/experiments/(\d+))/runs", line)
            address = match and (match.group(1), match.group(2))
        from ablation import tracking
        from ablation.cli.compose import compose_app

        client = tracking.client(compose_app("ui", list(overrides)).tracking)
        parent = client.search_runs([address[1]], "tags.sweep = 'parent'", order_by=["attributes.start_time DESC"],
                                    max_results=1)[0]
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                     f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1400,1250"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        driver.get(f"{address[0]}/runs/{parent.info.run_id}")
        deadline = time.time() + 90
        while "which augmentations to use" not in driver.page_source and time.time() < deadline:
            time.sleep(1)
        for more in driver.find_elements(By.XPATH, "//*[normalize-space(text())='Show more']"):
            more.click()
        for close in driver.find_elements(By.XPATH, "//*[contains(., 'MLflow Assistant')]/ancestor::div[1]"
                                                    "//button[@aria-label='Close']"):
            close.click()
        time.sleep(2)
        driver.save_screenshot(out)
        print(f"wrote {out}")
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:])
