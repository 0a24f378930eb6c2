"""The corruption suite (ablation.lenses.corruptions), what each run logs of it, and the report's mCE against none
(ablation.lenses.robustness) on constructed runs with a known answer."""
import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats
from test_report import _log

from ablation import tracking
from ablation.lenses import corruptions, robustness
from ablation.report import build as report
from ablation.training import config
from ablation.training.config import ConfigError
from ablation.training.run import run


def _smooth(size: int, channels: int, n: int = 4) -> np.ndarray:
    """Natural-looking images: smoothed noise stretched over 0-255."""
    rng = np.random.default_rng(size * 10 + channels)
    noise = rng.uniform(0, 255, (n, size, size, channels)).astype(np.float32)
    images = np.stack([cv2.GaussianBlur(i, (0, 0), size / 10).reshape(size, size, channels) for i in noise])
    return ((images - images.min()) / (images.max() - images.min()) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3), (64, 3)])
def test_each_corruption_changes_images_more_at_each_higher_severity(name, size, channels):
    images = _smooth(size, channels)
    change = [np.abs(corruptions.corrupt(images, name, s, seed=0).astype(float) - images).mean()
              for s in corruptions.SEVERITIES]
    assert all(a < b for a, b in zip(change, change[1:])), change
    assert change[0] > 0


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_the_suite_is_deterministic_for_a_seed(name):
    images = _smooth(32, 3)
    first = corruptions.corrupt(images, name, 3, seed=7)
    assert first.dtype == np.uint8 and first.shape == images.shape
    assert np.array_equal(first, corruptions.corrupt(images, name, 3, seed=7))
    if "noise" in name:  # the random ones draw from the seed
        assert not np.array_equal(first, corruptions.corrupt(images, name, 3, seed=8))


@pytest.mark.parametrize("override,message", [
    ("lenses.corruptions=[fog]", r"^lenses\.corruptions\[0\]: expected one of gaussian_noise, .*got 'fog'$"),
    ("lenses.severities=[0,6]", r"^lenses\.severities: expected a non-empty list of severities from 1 to 5"),
    ("lenses.severities=[]", r"^lenses\.severities: expected a non-empty list"),
    ("lenses.corruption_images=0", r"^lenses\.corruption_images: expected an integer >= 1"),
    ("lenses.corruptions=noise", r"^lenses\.corruptions: expected a list"),
])
def test_bad_lens_settings_name_their_key(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        config.validate(make_cfg(override, lean=False))


def test_a_run_logs_every_corruption_and_severity_and_none_when_off(make_cfg):
    cfg = make_cfg("experiment_name=robust", "trainer.epochs=1", "tracking.log_model=false",
                   "lenses.corruptions=[gaussian_noise,pixelate]", "lenses.severities=[1,5]", "lenses.corruption_images=50", lean=False)
    result = run(cfg)
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(result["run_id"]).data.metrics
    robust = {k: v for k, v in metrics.items() if k.startswith("robust/")}
    assert sorted(robust) == sorted([f"robust/{c}/{s}/accuracy" for c in ("gaussian_noise", "pixelate")
                                     for s in (1, 5)] + ["robust/mean_accuracy"])
    assert all(0 <= v <= 1 for v in robust.values())
    assert robust["robust/mean_accuracy"] == pytest.approx(np.mean([v for k, v in robust.items() if k.count("/") == 3]))
    assert metrics["time/robust_s"] > 0
    assert [k for k in metrics if k.startswith("test_class/")]
    off = make_cfg("experiment_name=robust", "trainer.epochs=1", "tracking.log_model=false", "lenses.corruptions=[]",
                   "lenses.per_class=false", "seed=1", lean=False)
    metrics = MlflowClient(tracking_uri=off.tracking.uri).get_run(run(off)["run_id"]).data.metrics
    assert not [k for k in metrics if k.startswith(("robust/", "test_class/", "time/robust_s"))]


ERRORS = {"none": 0.4, "noise": 0.2, "crop": 0.44}  # error under every corruption and severity


def test_mce_against_none_is_the_ratio_of_summed_errors_and_overlap_is_flagged(make_cfg, tmp_path):
    cfg = make_cfg("experiment_name=mce", f"paths.reports={tmp_path}/reports", lean=False)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "mce")
    rng = np.random.default_rng(0)
    for seed in range(4):
        for policy, error in ERRORS.items():
            rid = _log(client, exp_id, "digits", "small_cnn", policy, seed, 0.5 + rng.normal(0, 0.01),
                       0.9 + rng.normal(0, 0.01))
            jitter = rng.normal(0, 0.01) if policy != "none" else 0.0
            metrics = [Metric(f"robust/{c}/{s}/accuracy", 1 - error - jitter, 0, 0)
                       for c in ("gaussian_noise", "contrast") for s in (1, 2, 3)]
            metrics.append(Metric("robust/mean_accuracy", 1 - error - jitter, 0, 0))
            target = {"noise": "albumentations.GaussNoise", "crop": "albumentations.RandomResizedCrop"}.get(policy)
            params = [Param("augmentation.transforms", f'[{{"_target_": "{target}"}}]')] if target else []
            client.log_batch(rid, metrics=metrics, params=params)
    finished, _, _ = report.runs_of(cfg)
    table = robustness.mce(finished).set_index("augmentation")
    assert table.loc["noise", "mce"] == pytest.approx(0.5, abs=0.05)
    assert table.loc["crop", "mce"] == pytest.approx(1.1, abs=0.05)
    assert table.loc["noise", "mce_ci_low"] < 0.5 < table.loc["noise", "mce_ci_high"] < 1
    assert table.loc["noise", "delta_robust_accuracy"] == pytest.approx(20, abs=2)
    assert table.loc["noise", "trains_on"] == "gaussian_noise" and table.loc["crop", "trains_on"] == ""
    out = report.build(cfg)
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False).set_index("augmentation")
    assert "trains on gaussian_noise" in summary.loc["noise", "flags"]
    assert float(summary.loc["noise", "mce"]) == pytest.approx(table.loc["noise", "mce"])
    assert (out / "robustness.png").stat().st_size > 0 and "robustness.png" in (out / "report.html").read_text()


def test_the_mce_interval_is_a_t_interval_on_log_ratios_so_it_stays_positive():
    """Three seeds whose policy makes 1, 3 and 9 times none's errors: the geometric mean 3 with exp of the t
    interval of the logs, asymmetric and above 0 (on the ratios themselves, 4.33 +- 10.3 ran below 0)."""
    none_error, ratios = 0.1, (1.0, 3.0, 9.0)
    runs = pd.DataFrame([{"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": policy,
                          "seed": seed, "metrics.robust/contrast/1/accuracy": 1 - error}
                         for seed, ratio in enumerate(ratios)
                         for policy, error in (("none", none_error), ("zoom", none_error * ratio))])
    [row] = robustness.mce(runs).to_dict("records")
    logs = np.log(ratios)
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
    assert row["mce"] == pytest.approx(3.0)
    assert (row["mce_ci_low"], row["mce_ci_high"]) == pytest.approx(np.exp([logs.mean() - half, logs.mean() + half]))
    assert 0 < row["mce_ci_low"] < 1 and row["mce_ci_high"] - row["mce"] > 5 * (row["mce"] - row["mce_ci_low"])


def test_lenses_off_turns_every_lens_off_and_default_turns_them_on(make_cfg):
    off, on = make_cfg("lenses=off").lenses, make_cfg(lean=False).lenses
    assert (off.per_class, off.affinity, list(off.corruptions)) == (False, False, [])
    assert on.per_class and on.affinity and len(on.corruptions) == 9
    # One lens back on over lenses=off, as on the command line.
    assert make_cfg("lenses=off", "lenses.per_class=true").lenses.per_class is True
