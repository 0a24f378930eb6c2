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
