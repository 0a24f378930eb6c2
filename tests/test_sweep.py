"""Sweeps end to end: Hydra multiruns through the ablation sweeper and callback into a temporary MLflow store."""
import subprocess

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation.report import decide
from ablation.sweep import designs
from conftest import CONF, ROOT, compose_config, options
from helpers import parents_and_children, run_sweep, runs, store_uri, sweep_command

EXPERIMENTS = {"digits_ablation", "shapes_ablation", "quick", "models_ablation"}


def test_every_required_experiment_exists_and_names_itself():
    assert EXPERIMENTS <= set(options("experiment"))
    for name in options("experiment"):
        text = (CONF / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_")
        assert OmegaConf.create(text.split("\n", 1)[1])["experiment_name"] == name


@pytest.mark.slow
def test_quick_sweep_nests_runs_skips_finished_and_extends(tmp_path):
    first = run_sweep(tmp_path, "experiment=quick")
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(tracking_uri=store_uri(tmp_path))
    exp = client.get_experiment_by_name("quick")
    parents, children = parents_and_children(runs(store_uri(tmp_path), "quick"))
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["sweep_size"] == "4"
    assert "experiment=quick" in parent.data.params["overrides"]
    assert sorted(r.info.run_name for r in children) == [
        "hflip/small_cnn/s0", "hflip/small_cnn/s1", "none/small_cnn/s0", "none/small_cnn/s1"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.data.tags["experiment"] == "quick" for r in children)
    for k in range(1, 5):
        assert f"[{k}/4] " in first.stdout
    # The report was built at the end of the sweep, printed (the decision columns first), and logged to the
    # parent run.
    header = next(line for line in first.stdout.splitlines() if "verdict" in line and "augmentation" in line)
    assert header.split()[:3] == ["augmentation", "verdict", "flags"]
    report_dir = tmp_path / "reports" / "quick"
    assert {"summary.csv", "summary.md", "forest.png", "curves.png", "gaps.png", "previews.png", "report.html"} <= {
        p.name for p in report_dir.iterdir()}
    table = pd.read_csv(report_dir / "summary.csv").set_index("augmentation")
    assert set(table["verdict"]) <= {*decide.VERDICTS, decide.BASELINE_ROW}
    assert table.loc["none", "verdict"] == decide.BASELINE_ROW and table.loc["hflip", "n_seeds"] == 2
    # Two epochs (trainer=smoke): training is unfinished, flagged, and the printed advice says what to run.
    assert table.loc["none", "unfinished"] and "unfinished" in table.loc["none", "flags"]
    assert "trainer.early_stopping.enabled=true trainer.epochs=4" in first.stdout
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "quick")}
    assert "quick/summary.csv" in logged

    # The same sweep again: nothing new is trained, each skip is said.
    again = run_sweep(tmp_path, "experiment=quick", name="again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skip ") == 4
    assert "4 skipped" in again.stdout
    parents, children_after = parents_and_children(runs(store_uri(tmp_path), "quick"))
    assert len(children_after) == 4 and len(parents) == 2

    # A crashed run (left RUNNING) and a failed one are run again; a new seed runs only its own jobs.
    failed = next(r for r in children if r.info.run_name == "hflip/small_cnn/s1")
    client.set_terminated(failed.info.run_id, "FAILED")
    stale = client.create_run(exp.experiment_id, run_name="none/small_cnn/s2",
                              tags={"config_hash": _key_of(tmp_path, "none", 2)})
    extended = run_sweep(tmp_path, "experiment=quick", "seed=0,1,2", name="extended")
    assert extended.returncode == 0, extended.stderr[-3000:]
    _, children_final = parents_and_children(runs(store_uri(tmp_path), "quick"))
    before = {c.info.run_id for c in children_after} | {stale.info.run_id}
    new = sorted(r.info.run_name for r in children_final if r.info.run_id not in before)
    assert new == ["hflip/small_cnn/s1", "hflip/small_cnn/s2", "none/small_cnn/s2"]
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert "3 trained, 3 skipped" in extended.stdout
    summary = pd.read_csv(tmp_path / "reports" / "quick" / "summary.csv")
    assert summary.set_index("augmentation").loc["none", "n_seeds"] == 3


def _key_of(tmp_path, augmentation, seed):
    from ablation import augment, tracking

    # Composed as the sweep composes its jobs (no trainer=smoke), so the key is the one the sweep computes.
    cfg = compose_config("experiment=quick", f"augmentation={augmentation}", f"seed={seed}",
                         f"tracking.uri={store_uri(tmp_path)}", smoke=False)
    return tracking.config_hash(cfg, augment.build(cfg.augmentation).fingerprint)


def test_designs_expand_from_the_policy_file():
    defaults = OmegaConf.create({"sweep": {"design": "grid"}, "augmentation": {"name": "none"}})
    grid = [["augmentation=albu_mixed", "seed=0"], ["augmentation=albu_mixed", "seed=1"]]
    assert designs.jobs_of(grid, defaults) == grid
    loo = designs.jobs_of([[*job, "sweep.design=leave_one_out"] for job in grid], defaults)
    seed0 = [job for job in loo if "seed=0" in job]
    assert seed0[0] == ["seed=0", "augmentation=none"]
    assert seed0[1] == ["seed=0", "augmentation=albu_mixed"]
    assert [job[-1] for job in seed0[2:]] == [f"++augmentation.variant='-{u}'" for u in
                                             ["HorizontalFlip", "VerticalFlip", "Rotate", "RandomBrightnessContrast", "CLAHE"]]
    assert len(loo) == 2 * 7
    add = designs.jobs_of([["augmentation=idg_classic", "sweep.design=add_one_in"]], defaults)
    assert add[0] == ["augmentation=none"]
    assert [job[-1] for job in add[1:]] == [f"++augmentation.variant='+{u}'" for u in [
        "rotation_range", "zoom_range", "width_shift_range", "height_shift_range", "horizontal_flip"]]
    # The baseline is shared: two policies' leave-one-out designs run `none` once.
    both = designs.jobs_of([["augmentation=flowers", "sweep.design=leave_one_out"],
                         ["augmentation=albu_mixed", "sweep.design=leave_one_out"]], defaults)
    assert sum(job == ["augmentation=none"] for job in both) == 1


def test_bad_design_names_the_key():
    from ablation.training.config import ConfigError

    with pytest.raises(ConfigError, match=r"^sweep\.design: expected one of grid\|leave_one_out\|add_one_in"):
        designs.jobs_of([["sweep.design=loo"]], OmegaConf.create({"augmentation": {"name": "none"}}))


@pytest.mark.slow
def test_a_bad_combination_stops_the_sweep_before_any_training(tmp_path):
    result = run_sweep(tmp_path, "augmentation=none,hflip", "model=small_cnn,mobilenet_v2", "dataset.image_size=16",
                    "trainer=smoke")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("model=mobilenet_v2" in e for e in errors), result.stderr[-2000:]
    assert "Launching" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_failing_combination_does_not_stop_the_others(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 12, 12, 1), dtype=np.uint8)
    y = np.arange(60) % 3
    np.savez(tmp_path / "good.npz", x_train=x, y_train=y)
    np.savez(tmp_path / "bad.npz", x_train=x.astype(np.int32), y_train=y)  # passes the config check, fails to load
    result = run_sweep(tmp_path, "dataset=npz", f"dataset.path={tmp_path}/bad.npz,{tmp_path}/good.npz", "trainer=smoke",
                    "trainer.epochs=1", "tracking.log_model=false", "experiment_name=faults")
    assert result.returncode == 1
    assert "1 combination(s) failed" in result.stderr
    assert f"dataset.path={tmp_path}/bad.npz" in result.stderr and "x_train" in result.stderr
    parents, children = parents_and_children(runs(store_uri(tmp_path), "faults"))
    assert [r.info.status for r in children] == ["FINISHED"]
    assert parents[0].info.status == "FAILED" and "bad.npz" in parents[0].data.tags["error"]


@pytest.mark.slow
def test_a_report_that_cannot_be_built_fails_the_sweep_not_its_runs(tmp_path):
    """A sweep that cannot end in its report exits non-zero with one `error:` line, and its parent run is FAILED
    with the reason; the runs it trained stay FINISHED (nothing logged is lost)."""
    command = sweep_command(tmp_path, "augmentation=none,hflip", "trainer=smoke", "trainer.epochs=1",
                            "dataset.train_size=32", "lenses.corruptions=[]", "tracking.log_model=false",
                            "experiment_name=noreport")
    command = [c for c in command if not c.startswith("paths.reports=")]
    result = subprocess.run([*command, "paths.reports=/proc/ablation_reports"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: the report could not be built: FileNotFoundError") and "+parent_run_id=" in line
    parents, children = parents_and_children(runs(store_uri(tmp_path), "noreport"))
    assert [p.info.status for p in parents] == ["FAILED"]
    assert "the report could not be built" in parents[0].data.tags["error"]
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]


def test_the_parent_runs_status_is_decided_in_one_place():
    from ablation.sweep import jobs, parent

    jobs.failures.clear()
    assert parent.outcome(None, None) == ("FINISHED", None)
    assert parent.outcome(KeyboardInterrupt(), None) == ("KILLED", "KeyboardInterrupt: ")
    assert parent.outcome(None, "the report could not be built: OSError: x") == (
        "FAILED", "the report could not be built: OSError: x")
    jobs.failures.append((["augmentation=hflip", "seed=1"], "ValueError: bad"))
    try:
        assert parent.outcome(None, None) == ("FAILED", "[augmentation=hflip seed=1] ValueError: bad")
        assert parent.outcome(KeyboardInterrupt(), None)[0] == "KILLED"
    finally:
        jobs.failures.clear()
