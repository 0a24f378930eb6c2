"""Bad settings stop with one line naming the key, before any data is read or any MLflow run is opened."""
import os
import subprocess
import sys

import pytest

from ablation.training.config import user_error
from ablation.training.run import run
from conftest import ROOT, store_untouched

CASES = [
    (["trainer.batch_size=0"], "trainer.batch_size: expected an integer >= 1, got 0"),
    (["trainer.epochs=-1"], "trainer.epochs:"),
    (["trainer.learning_rate=0"], "trainer.learning_rate:"),
    (["trainer.optimizer=adamm"], "trainer.optimizer: unknown Keras optimizer 'adamm'"),
    (["trainer.monitor=accuracy"], "trainer.monitor: expected one of val_loss|val_accuracy"),
    (["dataset.image_size=4"], "dataset.image_size:"),
    (["dataset=folder", "dataset.path=/nonexistent/images"], "dataset.path:"),
    (["dataset=folder"], "dataset.path:"),
    (["augmentation=hflip", "augmentation.transforms.0.p=1.5"], "augmentation.transforms[0].p:"),
    (["augmentation=idg_classic", "augmentation.idg.rotation_range=-5"], "augmentation.idg.rotation_range:"),
    (["+model.kernel=3"], "model.kernel: not an argument"),
    (["seed=-1"], "seed:"),
]
# The report's settings: checked by the sweeper with every job, and by ablation-report, not by a single run.
REPORT_CASES = [
    (["report.correction=bonferroni"], "report.correction: expected one of bh|holm|none, got 'bonferroni'"),
    (["report.gap=median"], "report.gap: expected one of paired_auc|best|window|last5|auc|test_loss, got 'median'"),
    (["report.alpha=1.5"], "report.alpha: expected a number in (0, 1), got 1.5"),
    (["report.margin.accuracy=-1"], "report.margin.accuracy: expected a number >= 0, got -1"),
    (["report.margin.relative=-0.1"], "report.margin.relative: expected a number >= 0, got -0.1"),
]


@pytest.mark.parametrize("overrides,message", REPORT_CASES, ids=[c[1].split(":")[0] for c in REPORT_CASES])
def test_bad_report_setting_names_its_key(make_cfg, overrides, message):
    from ablation.report.settings import check

    with pytest.raises(Exception) as info:
        check(make_cfg(*overrides))
    assert user_error(info.value) and str(info.value) == message, info.value


@pytest.mark.parametrize("overrides,message", CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_bad_setting_names_its_key_before_any_run(make_cfg, tmp_path, overrides, message):
    cfg = make_cfg(*overrides)
    with pytest.raises(Exception) as info:
        run(cfg)
    assert user_error(info.value), info.value
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text
    # Nothing was recorded in the store.
    assert store_untouched(tmp_path)


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "ablation", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    result = _cli("trainer.batch_size=0", f"tracking.uri=sqlite:///{tmp_path}/m.db", f"hydra.run.dir={tmp_path}/out")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: trainer.batch_size: expected an integer >= 1, got 0"], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_diverging_run_is_one_error_line_and_failed_in_mlflow(tmp_path):
    """A known failure with a known fix (the loss became NaN): one `error:` line naming the setting, no
    traceback, and the run closed FAILED with the reason."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    result = _cli("trainer=smoke", "trainer.optimizer=sgd", "trainer.learning_rate=1e12", "dataset.train_size=48",
                  f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path}/artifacts", f"hydra.run.dir={tmp_path}/out")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: trainer.learning_rate: the training loss became nan")
    assert "Traceback" not in result.stderr
    client = MlflowClient(tracking_uri=uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert failed.info.status == "FAILED" and "lower trainer.learning_rate" in failed.data.tags["error"]


@pytest.mark.slow
def test_cli_unknown_group_option_names_the_group(tmp_path):
    result = _cli("augmentation=rotat", f"hydra.run.dir={tmp_path}/out")
    assert result.returncode != 0
    assert "augmentation/rotat" in result.stderr


@pytest.mark.slow
def test_unreachable_tracking_server_is_one_line_before_training(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    for args in ([], ["-m", "augmentation=none,hflip"]):
        result = _cli(*args, f"tracking.uri=http://127.0.0.1:{port}", f"hydra.run.dir={tmp_path}/out",
                      f"hydra.sweep.dir={tmp_path}/sweep")
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: tracking.uri: cannot reach the MLflow server at "
                                                          f"http://127.0.0.1:{port}"), result.stderr[-2000:]
        assert "Epoch" not in result.stdout


def test_report_command_refuses_a_bad_report_setting_in_one_line(make_cfg, capsys):
    from ablation.report import build as report

    with pytest.raises(SystemExit) as info:
        report.make(make_cfg("report.correction=fdr"))
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: report.correction: expected one of bh|holm|none, got 'fdr'"


# ----------------------------------------------------------------------------------------------------------------
# The task, report and sweep groups and augmentation.placement, and the keys they replaced

RENAMED = [
    ("augmentation.where=device", "augmentation.where: renamed to augmentation.placement; use augmentation.placement=device"),
    ("augmentation.mode=offline", "augmentation.mode: renamed to augmentation.placement; use augmentation.placement=offline"),
    ("augmentation.mode=online,offline",
     "augmentation.mode: renamed to augmentation.placement; use augmentation.placement=host,offline"),
    ("design=strength", "design: renamed to sweep.design; use sweep.design=strength"),
    ("strength=[0,1]", "strength: renamed to sweep.levels; use sweep.levels=[0,1]"),
    ("force=true", "force: renamed to sweep.rerun; use sweep.rerun=true"),
    ("inpaint.mask=ellipse", "inpaint.mask: renamed to task.mask; use task.mask=ellipse with task=inpaint"),
    ("+inpaint.fill=3", "inpaint.fill: renamed to task.fill; use task.fill=3 with task=inpaint"),
]


@pytest.mark.parametrize("override,message", RENAMED, ids=[r[0] for r in RENAMED])
def test_a_renamed_key_is_refused_naming_the_new_one(override, message):
    from ablation.cli.compose import compose_from_argv

    with pytest.raises(Exception) as info:
        compose_from_argv(["augmentation=rotate", override])
    assert user_error(info.value) and str(info.value) == message


def test_a_renamed_key_in_a_config_file_is_refused_naming_the_new_one(make_cfg):
    """A user's config written before the rename: Hydra merges the file's keys, the config check names them."""
    from omegaconf import OmegaConf

    from ablation.training import config

    for key, value, new in (("design", "strength", "sweep.design"), ("force", True, "sweep.rerun"),
                            ("inpaint", {"mask": "ellipse"}, "task"), ("augmentation.where", "device",
                                                                       "augmentation.placement")):
        cfg = make_cfg()
        OmegaConf.update(cfg, key, value, force_add=True)
        with pytest.raises(Exception) as info:
            config.validate(cfg)
        assert user_error(info.value) and str(info.value).startswith(f"{key}: renamed to {new} "), info.value


@pytest.mark.slow
def test_cli_refuses_a_renamed_key_in_one_line_before_training(tmp_path):
    for args in (["augmentation.where=device"], ["-m", "augmentation=none,hflip", "design=leave_one_out"]):
        result = _cli(*args, f"tracking.uri=sqlite:///{tmp_path}/m.db", f"hydra.run.dir={tmp_path}/out",
                      f"hydra.sweep.dir={tmp_path}/sweep")
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "renamed to" in errors[0] and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "m.db").exists()
    assert errors == ["error: design: renamed to sweep.design; use sweep.design=leave_one_out"]


@pytest.mark.parametrize("value", ["gpu", "online", "True"])
def test_placement_takes_host_device_or_offline(make_cfg, value):
    from ablation.training import config

    with pytest.raises(Exception) as info:
        config.validate(make_cfg(f"augmentation.placement={value}"))
    assert user_error(info.value)
    assert str(info.value).startswith("augmentation.placement: expected one of host|device|offline, got "), info.value


def test_the_groups_compose_and_the_primary_config_is_a_list_of_choices(make_cfg):
    from omegaconf import OmegaConf

    cfg = make_cfg("task=inpaint", "model=conv_autoencoder", "task.mask=ellipse", "report.correction=holm",
                   "sweep.design=strength", "sweep.levels=[0,2]", "augmentation.placement=offline")
    assert cfg.task.name == "inpaint" and cfg.task.mask == "ellipse" and cfg.task.fill == 0
    assert cfg.report.correction == "holm" and cfg.sweep.design == "strength" and list(cfg.sweep.levels) == [0, 2]
    assert set(make_cfg().task) == {"name"} and make_cfg().sweep.rerun is False
    top = set(OmegaConf.load(ROOT / "ablation" / "conf" / "config.yaml")) - {"defaults", "hydra"}
    assert top == {"seed", "experiment_name", "augmentation"}, top


def test_run_keys_are_those_of_the_config_before_the_groups():
    """Every shipped policy and experiment, and variants of placement, task and sweep settings, keep the run key
    (config_hash) and policy fingerprint they had under the old spellings: tests/data/run_keys.json holds what
    scripts/run_keys.py --old printed on the config before the task, report and sweep groups."""
    import json

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_keys
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    recorded = json.loads((ROOT / "tests" / "data" / "run_keys.json").read_text())
    assert not any("error" in v for v in recorded.values())
    assert run_keys.keys(old=False) == recorded


def test_config_hash_takes_the_new_layout_back_to_the_old_one():
    """The key of a config in the new layout is the key of the same config in the old one, computed by the same
    hashing (nothing hard-coded)."""
    from omegaconf import OmegaConf

    from ablation import tracking

    def new(task, placement, **aug):
        return OmegaConf.create({"seed": 0, "dataset": {"name": "digits"}, "model": {"name": "small_cnn"},
                                 "trainer": {"epochs": 3}, "task": task,
                                 "sweep": {"design": "strength", "levels": [0, 1], "rerun": True},
                                 "augmentation": {"name": "rotate", "placement": placement, "copies": 4,
                                                  "save_format": "png", "save_prefix": "aug", **aug}})

    def old(task, where, mode, inpaint=None, **aug):
        return OmegaConf.create({"seed": 0, "dataset": {"name": "digits"}, "model": {"name": "small_cnn"},
                                 "trainer": {"epochs": 3}, "task": task, "inpaint": inpaint or {"mask": "rectangle"},
                                 "design": "grid", "strength": [0, 0.5], "force": False,
                                 "augmentation": {"name": "rotate", "where": where, "mode": mode, "copies": 4,
                                                  "save_format": "png", "save_prefix": "aug", **aug}})

    inpaint = {"mask": "ellipse", "fill": 3}
    pairs = [(new({"name": "classify"}, "host"), old("classify", "host", "online")),
             (new({"name": "classify"}, "device"), old("classify", "device", "online")),
             (new({"name": "classify"}, "offline", copies=2), old("classify", "host", "offline", copies=2)),
             (new({"name": "reconstruct"}, "host"), old("reconstruct", "host", "online")),
             (new({"name": "inpaint", **inpaint}, "host"), old("inpaint", "host", "online", inpaint))]
    keys = [tracking.config_hash(n, "fp") for n, _ in pairs]
    assert keys == [tracking.config_hash(o, "fp") for _, o in pairs]
    assert len(set(keys)) == len(keys)
