"""Shared fixtures: the real Hydra config, shrunk with trainer=smoke, tracked in a temporary SQLite store."""
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several test processes share the cores: one thread each for TensorFlow's and the math libraries' operations
    # (what a packed sweep's jobs get), instead of every process spreading over every core.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hydra import compose, initialize_config_dir

import helpers

ROOT = Path(__file__).resolve().parents[1]
# The config folder ships inside the package (ablation/conf/) or, in older layouts, at the repository root.
# find_spec locates the package without importing it (no TensorFlow at collection time).
_PACKAGE = Path(importlib.util.find_spec("ablation").origin).parent
CONF = next((p for p in (_PACKAGE / "conf", ROOT / "conf") if (p / "config.yaml").is_file()), ROOT / "conf")


def browser_or_skip(driver: bool = True) -> None:
    """Headless Chromium (and its driver, for selenium) from Debian's packages, installed on first use by
    scripts/install-browser.sh; the test skips, saying why, where they cannot be installed."""
    import shutil
    import subprocess

    needed = ("chromium", "chromedriver") if driver else ("chromium",)
    if not all(shutil.which(n) for n in needed):
        subprocess.run(["bash", str(ROOT / "scripts" / "install-browser.sh")], capture_output=True, timeout=900)
    if not all(shutil.which(n) for n in needed):
        message = "no browser: chromium and chromium-driver could not be installed (scripts/install-browser.sh)"
        if os.environ.get("CI"):  # in CI a green run must mean the page was seen
            pytest.fail(message)
        pytest.skip(message)


def options(group: str) -> list[str]:
    """Every option of a config group, from the files under conf/<group>/ (drives registry tests)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(*overrides: str, smoke: bool = True, hydra: bool = False):
    """The real config, composed from CONF as `python -m ablation <overrides>` composes it: shrunk with
    trainer=smoke unless smoke=False, with the hydra node when hydra=True. Tests take make_cfg; this is for
    what cannot (module-scoped fixtures, a sweep's own composition)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*(["trainer=smoke"] if smoke else []), *overrides],
                       return_hydra_config=hydra)


@pytest.fixture(scope="session", autouse=True)
def store_template(tmp_path_factory) -> Path:
    """An empty store that MLflow itself created (its tables, the Default experiment), once per test process:
    helpers.seed_store copies it into each test's folder."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    helpers.STORE_TEMPLATE[:] = [path]
    return path


def store_overrides(folder: Path) -> list[str]:
    """A SQLite tracking store and its artifacts inside folder: a copy of the empty store template when folder has
    no store yet."""
    helpers.seed_store(folder)
    return [f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", f"tracking.artifact_root={folder / 'artifacts'}"]


def store_untouched(folder: Path) -> bool:
    """Nothing was recorded in the store of store_overrides(folder): no experiment beyond MLflow's Default, no run
    (read with sqlite3 itself, so that looking opens nothing through MLflow)."""
    import sqlite3

    path = folder / "mlflow.db"
    if not path.exists():
        return True
    with sqlite3.connect(path) as db:
        experiments = db.execute("SELECT name FROM experiments").fetchall()
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    return experiments == [("Default",)] and runs == 0


@pytest.fixture
def tracking_overrides(tmp_path):
    return store_overrides(tmp_path)


@pytest.fixture
def make_cfg(tracking_overrides):
    """make_cfg("augmentation=rotate", ...) -> the composed config with trainer=smoke, a temporary store, and
    neither lenses nor a logged model unless the overrides name them (helpers.lean: seconds per run that only the
    tests about them read). smoke=False keeps the trainer the overrides choose; store=False keeps the tracking
    option's own store; lean=False keeps the shipped lenses and model logging."""

    def _make(*overrides: str, smoke: bool = True, store: bool = True, lean: bool = True):
        return compose_config(*(tracking_overrides if store else []), *(helpers.lean(overrides) if lean else []),
                              *overrides, smoke=smoke)

    return _make


@pytest.fixture(autouse=True)
def _no_mlflow_environment(monkeypatch):
    """A developer's own MLFLOW_TRACKING_URI or MLFLOW_EXPERIMENT_NAME never sends a test's runs elsewhere
    (tests that are about them set them)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Decoded datasets go to a temporary cache, never into the repository's runs/cache."""
    monkeypatch.setenv("ABLATION_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    # trainer.resume's training state likewise.
    monkeypatch.setenv("ABLATION_BACKUP_DIR", str(tmp_path_factory.getbasetemp() / "backup"))


def pytest_sessionfinish(session, exitstatus):
    """Under CI (CI set, as .ci/run does) a skipped test fails the run: a green CI means every test ran."""
    if not os.environ.get("CI") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        for report in skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            reporter.write_line(f"skipped under CI: {report.nodeid}: {reason}", red=True)
        session.exitstatus = 1
