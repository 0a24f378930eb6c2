"""The gap report on a constructed case: synthetic runs logged to a real MLflow store where the answer is known."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from ablation import report, tracking

# Per-seed best-epoch gap offsets from `none`: the verdict each policy must get.
EFFECTS = {
    "good": ([-0.30, -0.31, -0.29, -0.30, -0.32], "reduces gap"),
    "bad": ([0.20, 0.22, 0.19, 0.21, 0.20], "widens gap"),
    "noisy": ([0.30, -0.30, 0.25, -0.28, 0.02], "no clear effect"),
}
SEEDS = range(5)


def _log(client, exp_id, dataset, model, augmentation, seed, gap, acc, status="FINISHED"):
    run = client.create_run(exp_id, run_name=f"{augmentation}/{model}/s{seed}", tags={
        "dataset": dataset, "model": model, "augmentation": augmentation, "seed": str(seed),
        "config_hash": f"{dataset}-{model}-{augmentation}-{seed}"})
    rid = run.info.run_id
    metrics = [Metric("best/gap_loss", gap, 0, 0), Metric("best/gap_accuracy", gap / 10, 0, 0),
               Metric("test/accuracy", acc, 0, 0), Metric("test/loss", 1 - acc, 0, 0)]
    for epoch in (1, 2, 3):
        metrics += [Metric("train_clean/loss", 1.0 / epoch, 0, epoch), Metric("val/loss", 1.0 / epoch + gap, 0, epoch)]
    client.log_batch(rid, metrics=metrics)
    fig = Figure(figsize=(2, 1))
    fig.subplots().imshow(np.full((4, 8), seed))
    client.log_figure(rid, fig, "augmentation_preview.png")
    if status == "FAILED":
        client.set_tag(rid, "error", "RuntimeError: loss is NaN")
    client.set_terminated(rid, status)
    return rid


@pytest.fixture
def synthetic(make_cfg, tmp_path):
    cfg = make_cfg("experiment_name=synthetic", f"tracking.report_dir={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "synthetic")
    rng = np.random.default_rng(0)
    for model in ("small_cnn", "resnet"):
        for seed in SEEDS:
            base = 0.8 + rng.normal(0, 0.2)  # seed noise far larger than the effects' own spread
            _log(client, exp_id, "digits", model, "none", seed, base, 0.9)
            for name, (offsets, _) in EFFECTS.items():
                _log(client, exp_id, "digits", model, name, seed, base + offsets[seed], 0.9 + offsets[seed] / 10)
    _log(client, exp_id, "digits", "small_cnn", "crashy", 0, 0.0, 0.0, status="FAILED")
    return cfg


def test_summary_columns_verdicts_and_order(synthetic):
    out = report.build(synthetic)
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns[:len(report.COLUMNS)]) == report.COLUMNS
    assert len(table) == 8  # 2 models x (none + 3 policies); the failed one is listed apart
    for model in ("small_cnn", "resnet"):
        rows = table[table["model"] == model].set_index("augmentation")
        for name, (offsets, expected) in EFFECTS.items():
            assert rows.loc[name, "verdict"] == expected, (model, name)
            assert rows.loc[name, "delta_gap_loss"] == pytest.approx(np.mean(offsets))
            assert rows.loc[name, "delta_gap_loss_ci_low"] < np.mean(offsets) < rows.loc[name, "delta_gap_loss_ci_high"]
            assert rows.loc[name, "delta_test_accuracy"] == pytest.approx(np.mean(offsets) / 10)
            assert rows.loc[name, "n_seeds"] == 5
        assert rows.loc["none", "delta_gap_loss"] == 0
    assert table["delta_gap_loss"].is_monotonic_increasing
    assert set(table["verdict"]) <= set(report.VERDICTS)


def test_unpaired_means_would_hide_the_effect(synthetic):
    """The seed noise (sd 0.2) swamps a 0.3 effect in unpaired stds; pairing by seed is what finds it."""
    table = pd.read_csv(report.build(synthetic) / "summary.csv").set_index(["model", "augmentation"])
    good = table.loc[("small_cnn", "good")]
    assert good["gap_loss_std"] > 0.05
    assert good["delta_gap_loss_ci_high"] < 0


def test_files_figures_and_failed_combinations(synthetic, tmp_path):
    out = report.build(synthetic)
    assert out == tmp_path / "reports" / "synthetic"
    for name in ("summary.md", "curves.png", "gaps.png", "previews.png", "heatmap.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    for image in ("curves.png", "gaps.png", "previews.png", "heatmap.png"):
        assert f"src='{image}'" in page
    assert "reduces gap" in page and "crashy" in page
    md = (out / "summary.md").read_text()
    assert "## Failed combinations" in md and "loss is NaN" in md
    assert pd.read_csv(out / "failed.csv")["run"].tolist() == ["crashy/small_cnn/s0"]


def test_report_command_prints_the_table(synthetic, capsys):
    report.main(synthetic)
    printed = capsys.readouterr().out
    assert "verdict" in printed and "reduces gap" in printed and "report.html" in printed


def test_report_by_parent_run_id_finds_its_experiment(synthetic):
    client = MlflowClient(tracking_uri=synthetic.tracking.uri)
    parent = tracking.open_parent(synthetic, {"overrides": "x"})
    other = synthetic.copy()
    other.experiment_name = "elsewhere"
    out = report.main(other, parent)
    assert out.name == "synthetic"
    assert client.get_run(parent).data.tags["sweep"] == "parent"


def test_empty_experiment_is_a_clear_error(make_cfg, capsys):
    with pytest.raises(SystemExit) as info:
        report.main(make_cfg("experiment_name=nothing_here"))
    assert info.value.code == 2
    assert "experiment_name: no finished runs in MLflow experiment 'nothing_here'" in capsys.readouterr().err


def test_image_tasks_without_accuracy_get_gap_verdicts_and_psnr(make_cfg, tmp_path, capsys):
    """reconstruct/inpaint runs log no accuracy: the verdict is the loss gap's, the test score psnr."""
    cfg = make_cfg("experiment_name=images", f"tracking.report_dir={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "images")
    rng = np.random.default_rng(1)
    for seed in SEEDS:
        base = 0.02 + rng.normal(0, 0.005)
        for augmentation, offset, psnr in (("none", 0.0, 20.0), ("hflip", -0.01, 21.0)):
            rid = client.create_run(exp_id, run_name=f"{augmentation}/conv_autoencoder/s{seed}", tags={
                "dataset": "digits", "model": "conv_autoencoder", "augmentation": augmentation, "seed": str(seed),
                "task": "reconstruct", "config_hash": f"{augmentation}-{seed}"}).info.run_id
            metrics = [Metric("best/gap_loss", base + offset + 0.001 * seed, 0, 0), Metric("test/loss", 0.01, 0, 0),
                       Metric("test/psnr", psnr + seed / 10, 0, 0), Metric("test/mae", 0.05, 0, 0)]
            metrics += [Metric("train_clean/loss", 0.01 / e, 0, e) for e in (1, 2)]
            metrics += [Metric("val/loss", 0.01 / e + base + offset, 0, e) for e in (1, 2)]
            client.log_batch(rid, metrics=metrics)
            client.set_terminated(rid, "FINISHED")
    out = report.main(cfg)
    table = pd.read_csv(out / "summary.csv").set_index("augmentation")
    assert list(pd.read_csv(out / "summary.csv").columns[:len(report.COLUMNS)]) == report.COLUMNS
    assert table.loc["hflip", "verdict"] == "reduces gap"
    assert table.loc["hflip", "delta_gap_loss"] == pytest.approx(-0.01)
    assert table.loc["hflip", "delta_test_psnr"] == pytest.approx(1.0)
    assert table.loc["hflip", "test_psnr_mean"] == pytest.approx(21.2)
    assert set(table["task"]) == {"reconstruct"}
    assert table[["test_accuracy_mean", "gap_accuracy_mean", "delta_test_accuracy"]].isna().all().all()
    printed = capsys.readouterr().out
    assert "test_psnr_mean" in printed and "test_accuracy_mean" not in printed and "reduces gap" in printed


def test_a_setting_the_sweep_varied_splits_the_rows_and_pairs_within_it(make_cfg, tmp_path, capsys):
    """A sweep over dataset.normalize: the policy helps under one mode and hurts under the other. Merged, the two
    would cancel out; each mode is its own row, compared with the `none` of the same mode."""
    from mlflow.entities import Param

    cfg = make_cfg("experiment_name=modes", f"tracking.report_dir={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "modes")
    rng = np.random.default_rng(2)
    effect = {"rescale": -0.3, "featurewise": 0.3}
    for seed in SEEDS:
        for mode, offset in effect.items():
            base = 0.8 + rng.normal(0, 0.2)
            for augmentation, fingerprint in (("none", "f0"), ("hflip", "f1"), ("mixed", f"m-{mode}")):
                gap = base + (offset if augmentation != "none" else 0.0) + 0.01 * seed
                rid = _log(client, exp_id, "digits", "small_cnn", augmentation, seed, gap, 0.9)
                client.set_tag(rid, "config_hash", f"{mode}-{augmentation}-{seed}")
                client.set_tag(rid, "policy_fingerprint", fingerprint)
                # What run.py logs: the whole config as params; only dataset.normalize differs between the modes
                # (the seed, what follows it and the policy's own keys never count as settings).
                client.log_batch(rid, params=[Param("dataset.normalize", mode), Param("seed", str(seed)),
                                              Param("augmentation.name", augmentation), Param("trainer.epochs", "3"),
                                              Param("tracking.uri", f"somewhere-{seed}"),
                                              Param("dataset.split_seed", str(seed))])  # follows the seed
    out = report.main(cfg)
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns[:len(report.COLUMNS)]) == report.COLUMNS
    rows = table.set_index(["setting", "augmentation"])
    assert len(table) == 6 and set(rows.index.get_level_values(0)) == {"dataset.normalize=rescale",
                                                                       "dataset.normalize=featurewise"}
    for mode, offset in effect.items():
        row = rows.loc[(f"dataset.normalize={mode}", "hflip")]
        assert row["delta_gap_loss"] == pytest.approx(offset) and row["n_seeds"] == 5
        assert row["verdict"] == ("reduces gap" if offset < 0 else "widens gap")
        # One policy name whose content differed between the modes stays one row per mode (its fingerprint is
        # constant within each).
        assert rows.loc[(f"dataset.normalize={mode}", "mixed"), "delta_gap_loss"] == pytest.approx(offset)
    assert (out / "heatmap.png").stat().st_size > 0  # one dataset and model, two settings
    printed = capsys.readouterr().out
    assert "setting" in printed and "dataset.normalize=featurewise" in printed


def test_one_policy_name_with_two_contents_is_two_rows(synthetic, tmp_path):
    """A policy file edited between two sweeps of one experiment: the runs of each version are rows of their
    own, named by the start of the policy's fingerprint."""
    client = MlflowClient(tracking_uri=synthetic.tracking.uri)
    exp_id = client.get_experiment_by_name("synthetic").experiment_id
    for run in client.search_runs([exp_id], "tags.augmentation = 'good' and tags.model = 'resnet'"):
        client.set_tag(run.info.run_id, "policy_fingerprint", "aaaaaaaaaaaa")
    for seed in SEEDS:
        rid = _log(client, exp_id, "digits", "resnet", "good", seed, 5.0, 0.5)
        client.set_tag(rid, "config_hash", f"good-v2-{seed}")
        client.set_tag(rid, "policy_fingerprint", "bbbbbbbbbbbb")
    table = pd.read_csv(report.build(synthetic) / "summary.csv")
    resnet = table[table["model"] == "resnet"].set_index("augmentation")
    assert {"good [aaaaaaaa]", "good [bbbbbbbb]"} <= set(resnet.index) and "good" not in resnet.index
    assert resnet.loc["good [aaaaaaaa]", "verdict"] == "reduces gap"
    assert resnet.loc["good [bbbbbbbb]", "verdict"] == "widens gap"
    assert table["setting"].isna().all()  # nothing else varied: no setting
    assert "good" in set(table[table["model"] == "small_cnn"]["augmentation"])
