"""The report on constructed sweeps: synthetic runs logged to a real MLflow store where the answer is known, so
every verdict, flag and interval can be checked against an independent computation (scipy.stats)."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from ablation import tracking
from ablation.report import build as report
from ablation.report import decide
from ablation.report import figures as plots
from ablation.report import view as report_view
from conftest import compose_config, store_overrides
from helpers import lean, runs

SEEDS = range(5)
# Per-seed offsets from `none` of (gap, test accuracy as logged: a fraction, so 0.01 is 1 point in the table), and
# the verdict each policy must get, in rule order. none's accuracy is about 0.9, so the default margin (10% more
# errors than none) is about 1 point; none's mean gap is about 0.83, so the gap's equivalence margin (10% of it)
# is about 0.08. `late` (unfinished) completes the verdicts.
EFFECTS = {
    # Gap clearly lower, score 0.2 to 0.4 points higher: well within the margin.
    "good": ([-0.30, -0.31, -0.29, -0.30, -0.32], [0.002, 0.004, 0.001, 0.003, 0.002], decide.HELPS),
    # Gap clearly lower, score -1 point on average with a 4-point spread: its interval reaches far below -margin.
    "unsure": ([-0.30, -0.31, -0.29, -0.30, -0.32], [0.03, -0.05, 0.02, -0.06, 0.01], decide.COST_UNCLEAR),
    # Both within their margins, and tightly: shown equivalent.
    "same": ([0.01, -0.01, 0.0, 0.005, -0.005], [0.001, -0.001, 0.0, 0.0005, -0.0005], decide.EQUIVALENT),
    # A gap that moves by 0.3 either way from seed to seed: neither an effect nor shown within 0.08.
    "noisy": ([0.30, -0.30, 0.25, -0.28, 0.02], [0.01, -0.01, 0.0, 0.005, -0.004], decide.UNDECIDED),
    "bad": ([0.20, 0.22, 0.19, 0.21, 0.20], [0.001, -0.002, 0.0, 0.002, -0.001], decide.WIDENS),
    # idg_classic at 12 epochs: the gap closes because the model no longer fits, 17 points of accuracy lost.
    "underfit": ([-0.10, -0.11, -0.09, -0.10, -0.12], [-0.17, -0.18, -0.16, -0.17, -0.175], decide.COSTS),
    "flip": ([0.01, -0.02, 0.03, -0.01, 0.0], [-0.04, -0.05, -0.045, -0.04, -0.05], decide.HURTS),
}
POINTS = 100  # a logged accuracy of 0.9 is 90 points in the table
EPOCHS = 6


def _log(client, exp_id, dataset, model, augmentation, seed, gap, acc, status="FINISHED", best_epoch=3,
         train_acc=1.0, seconds=10.0, n_test=None, curve=None, epoch_limit=EPOCHS):
    """A finished run as run.py records it: the per-epoch clean-train and validation losses (best at
    best_epoch, the gap constant), the best-epoch and test metrics, the trainer's epoch limit; with n_test, the
    number of test images (data/n_test); with curve, those (train_clean/loss, val/loss) per epoch instead."""
    run = client.create_run(exp_id, run_name=f"{augmentation}/{model}/s{seed}", tags={
        "dataset": dataset, "model": model, "augmentation": augmentation, "seed": str(seed),
        "config_hash": f"{dataset}-{model}-{augmentation}-{seed}"})
    rid = run.info.run_id
    metrics = [Metric("best/gap_loss", gap, 0, 0), Metric("best/gap_accuracy", gap / 10, 0, 0),
               Metric("test/accuracy", acc, 0, 0), Metric("test/loss", 1 - acc, 0, 0),
               Metric("best_epoch", best_epoch, 0, 0), Metric("best/train_clean_accuracy", train_acc, 0, 0),
               Metric("time/total_s", seconds, 0, 0), Metric("throughput/images_per_s", 5000 / seconds, 0, 0)]
    if n_test is not None:
        metrics.append(Metric("data/n_test", n_test, 0, 0))
    if curve is None:
        for epoch in range(1, EPOCHS + 1):
            val = 0.3 + gap + 0.01 * (epoch - best_epoch) ** 2  # lowest at the best epoch
            metrics += [Metric("train_clean/loss", 0.3, 0, epoch), Metric("val/loss", val, 0, epoch)]
    else:
        for epoch, (train_loss, val_loss) in enumerate(zip(*curve), start=1):
            metrics += [Metric("train_clean/loss", float(train_loss), 0, epoch),
                        Metric("val/loss", float(val_loss), 0, epoch)]
    client.log_batch(rid, metrics=metrics, params=[Param("trainer.epochs", str(epoch_limit))])
    if seed == 0:  # the report shows each policy's preview from its lowest seed
        fig = Figure(figsize=(2, 1))
        fig.subplots().imshow(np.full((4, 8), seed))
        client.log_figure(rid, fig, "augmentation_preview.png")
    if status == "FAILED":
        client.set_tag(rid, "error", "RuntimeError: loss is NaN")
    client.set_terminated(rid, status)
    return rid


def _base(seed, rng):
    return 0.8 + rng.normal(0, 0.2), 0.9 + rng.normal(0, 0.03)  # seed noise far larger than the effects' spread


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    """The constructed sweep (2 models x 5 seeds x none, 8 policies and `late`, and a failed run), logged once per
    module: the folder of its store and artifacts. Each test reads or changes a copy of the store (synthetic)."""
    folder = tmp_path_factory.mktemp("synthetic")
    cfg = compose_config("experiment_name=synthetic", *store_overrides(folder))
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "synthetic")
    rng = np.random.default_rng(0)
    for model in ("small_cnn", "resnet"):
        for seed in SEEDS:
            gap, acc = _base(seed, rng)
            # The first run of a process also compiles its model: 30 s, the others 10 (`bad` takes twice as long).
            _log(client, exp_id, "digits", model, "none", seed, gap, acc, seconds=30.0 if seed == 0 else 10.0)
            for name, (gaps, accs, _) in EFFECTS.items():
                _log(client, exp_id, "digits", model, name, seed, gap + gaps[seed], acc + accs[seed],
                     train_acc=0.85 if name == "underfit" else 1.0, seconds=20.0 if name == "bad" else 10.0)
            # Still improving at the end: best epoch = the last one, in 3 of 5 seeds.
            _log(client, exp_id, "digits", model, "late", seed, gap - 0.2, acc + 0.01,
                 best_epoch=EPOCHS if seed < 3 else 3)
    _log(client, exp_id, "digits", "small_cnn", "crashy", 0, 0.0, 0.0, status="FAILED")
    return folder


def _copy_of(store: Path, folder: Path, *overrides: str):
    """The constructed sweep's config over a copy of its store in folder, its reports in folder/reports."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store / "mlflow.db", folder / "mlflow.db")
    return compose_config("experiment_name=synthetic", f"paths.reports={folder}/reports", *store_overrides(folder),
                          *lean(overrides), *overrides)


@pytest.fixture
def synthetic(synthetic_store, tmp_path):
    """The constructed sweep's config, over this test's own copy of its store."""
    return _copy_of(synthetic_store, tmp_path)


@pytest.fixture(scope="module")
def built(synthetic_store, tmp_path_factory):
    """The constructed sweep's report with the default settings, built once for the tests that only read it:
    (the config, the summary table)."""
    cfg = _copy_of(synthetic_store, tmp_path_factory.mktemp("built"))
    return cfg, pd.read_csv(report.build(cfg) / "summary.csv")


def _metrics_by_seed(cfg, augmentation, model="small_cnn"):
    found = runs(cfg.tracking.uri, cfg.experiment_name, f"tags.augmentation = '{augmentation}' and tags.model = '{model}'")
    by_seed = {int(r.data.tags["seed"]): r.data.metrics for r in found}
    return [by_seed[s] for s in SEEDS]


def test_every_verdict_reached_in_its_rule_order(built):
    synthetic, table = built
    assert list(table.columns[:len(report.COLUMNS)]) == report.COLUMNS
    assert len(table) == 18  # 2 models x (none + 8 policies); the failed one is listed apart
    for model in ("small_cnn", "resnet"):
        rows = table[table["model"] == model].set_index("augmentation")
        for name, (gaps, accs, expected) in EFFECTS.items():
            assert rows.loc[name, "verdict"] == expected, (model, name)
            assert rows.loc[name, "delta_gap"] == pytest.approx(np.mean(gaps))
            assert rows.loc[name, "delta_test_score"] == pytest.approx(POINTS * np.mean(accs))  # in points
            assert rows.loc[name, "n_seeds"] == 5
        assert rows.loc["late", "verdict"] == decide.UNFINISHED
        assert rows.loc["none", "verdict"] == decide.BASELINE_ROW and rows.loc["none", "delta_gap"] == 0
        # The relative margin: 10% of none's error rate, in points.
        errors = 100 - POINTS * np.mean([r["test/accuracy"] for r in _metrics_by_seed(synthetic, "none", model)])
        assert rows.loc["good", "margin"] == pytest.approx(0.1 * errors) and rows.loc["good", "margin_relative"] == 0.1
        # Sorted by the decision, then by delta test score: never by the gap alone.
        order = [decide.VERDICTS.index(v) if v in decide.VERDICTS else 99 for v in rows["verdict"]]
        assert order == sorted(order)
        assert rows.index[-1] == "none"
    assert set(table["verdict"]) == {*decide.VERDICTS, decide.BASELINE_ROW}


def test_each_policy_shows_its_cost_next_to_its_verdict(built):
    """Seconds per run (median: the first run of a process also compiles), that against none, images/s."""
    table = report_view.decision_view(built[1]).set_index("augmentation")
    assert table.columns.tolist()[-3:] == ["s per run", "x none", "train img/s"]
    small = table[table["model"] == "small_cnn"]
    assert small.loc["bad", ["s per run", "x none", "train img/s"]].tolist() == ["20.0", "2.00", "250"]
    # images/s is the mean over seeds: (5000 / 30 + 4 x 5000 / 10) / 5
    assert small.loc["none", ["s per run", "x none", "train img/s"]].tolist() == ["10.0", "1.00", "433"]
    assert small.loc["good", "x none"] == "1.00"


def test_the_seeds_to_decide_column_shows_only_while_a_row_is_undecided(built):
    summary_table = built[1]
    undecided = summary_table["seeds_needed"].notna()
    assert undecided.any() and not undecided.all()
    assert "seeds to decide" in report_view.decision_view(summary_table).columns
    assert "seeds to decide" not in report_view.decision_view(summary_table[~undecided]).columns


def test_a_lower_gap_bought_with_17_points_of_accuracy_is_never_helps(built):
    table = built[1].set_index(["model", "augmentation"])
    row = table.loc[("small_cnn", "underfit")]
    assert row["delta_gap"] < 0 and row["delta_gap_ci_high"] < 0  # the gap is clearly lower ...
    assert row["verdict"] == decide.COSTS != decide.HELPS  # ... and it is not recommended
    assert row["underfits"] and "underfits" in row["flags"]
    assert row["delta_train_clean_score"] == pytest.approx(-15.0)  # points: 0.85 against 1.0
    assert pd.isna(table.loc[("small_cnn", "good"), "flags"])  # no flag: an empty cell


def test_unfinished_training_is_flagged_with_what_to_do(synthetic, capsys):
    table = pd.read_csv(report.make(synthetic) / "summary.csv").set_index(["model", "augmentation"])
    late = table.loc[("small_cnn", "late")]
    assert late["unfinished"] and late["unfinished_seeds"] == "3/5" and "unfinished 3/5" in late["flags"]
    # Unfinished in at least half its seeds: no verdict yet, and the flags say what the rule would say.
    assert late["verdict"] == decide.UNFINISHED and late["verdict_rule"] in decide.VERDICTS
    assert f"else: {late['verdict_rule']}" in late["flags"]
    assert not table.loc[("small_cnn", "good"), "unfinished"]
    printed = capsys.readouterr().out
    assert "unfinished training" in printed and "late" in printed
    assert f"trainer.early_stopping.enabled=true trainer.epochs={2 * EPOCHS}" in printed


def test_intervals_and_p_values_are_scipys_paired_t(built):
    """Every interval and p value equals scipy.stats.ttest_rel on the same per-seed numbers (accuracy in points;
    these runs log no data/n_test, so no floor applies)."""
    synthetic, table = built[0], built[1].set_index(["model", "augmentation"])
    base = _metrics_by_seed(synthetic, "none")
    for name in EFFECTS:
        policy, row = _metrics_by_seed(synthetic, name), table.loc[("small_cnn", name)]
        for prefix, metric, scale in (("delta_gap", "best/gap_loss", 1), ("delta_test_score", "test/accuracy", POINTS)):
            mine = scale * np.array([r[metric] for r in policy])
            theirs = scale * np.array([r[metric] for r in base])
            if np.ptp(mine - theirs) == 0:
                continue
            test = stats.ttest_rel(mine, theirs)
            low, high = test.confidence_interval(0.95)
            assert row[f"{prefix}_ci_low"] == pytest.approx(low, abs=1e-9), (name, prefix)
            assert row[f"{prefix}_ci_high"] == pytest.approx(high, abs=1e-9), (name, prefix)
            p = "p_gap" if prefix == "delta_gap" else "p_score"
            assert row[p] == pytest.approx(test.pvalue, rel=1e-6, abs=1e-12), (name, prefix)
    # Each endpoint is its own family over all policies (Benjamini-Hochberg by default), tested at alpha / 2.
    policies = table.loc["small_cnn"].drop("none")
    for endpoint in ("p_gap", "p_score"):
        expected = stats.false_discovery_control(policies[endpoint], method="bh")
        assert np.allclose(policies[f"{endpoint}_adjusted"], expected), endpoint
    assert not np.allclose(policies["p_gap_adjusted"], stats.false_discovery_control(
        np.r_[policies["p_gap"], policies["p_score"]], method="bh")[:len(policies)])  # not one family of both


def test_noisy_seeds_an_unpaired_interval_gets_wrong(make_cfg, tmp_path):
    """Seeds that differ far more than the effect (gaps from 0.2 to 1.9, a steady -0.3): only the paired interval
    excludes 0, and the report's interval is the paired one, to the exact value."""
    cfg = make_cfg("experiment_name=noisy", f"paths.reports={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "noisy")
    theirs = np.array([0.2, 1.4, 0.5, 1.9, 0.9])
    mine = theirs - np.array([0.30, 0.32, 0.28, 0.31, 0.29])
    for seed in SEEDS:
        _log(client, exp_id, "digits", "small_cnn", "none", seed, theirs[seed], 0.9)
        _log(client, exp_id, "digits", "small_cnn", "good", seed, mine[seed], 0.9 + 0.001 * seed)
    unpaired = stats.ttest_ind(mine, theirs).confidence_interval(0.95)
    paired = stats.ttest_rel(mine, theirs).confidence_interval(0.95)
    assert unpaired.low < 0 < unpaired.high  # an unpaired report would call it undecided
    assert paired.high < 0
    row = pd.read_csv(report.build(cfg) / "summary.csv").set_index("augmentation").loc["good"]
    assert row["delta_gap_ci_low"] == pytest.approx(paired.low, abs=1e-9)
    assert row["delta_gap_ci_high"] == pytest.approx(paired.high, abs=1e-9)
    assert row["gap_std"] > 0.5 and row["verdict"] == decide.HELPS


SHAPED_SEEDS = range(3)


def _shaped_curve(augmentation, seed):
    """(train_clean/loss, val/loss) per epoch: the clean training loss falls as 1/epoch; none's gap widens in a
    straight line over 8 epochs, the policy's starts lower, bends upwards and runs for 10 (it trained longer).
    Each seed shifts and tilts both, so the paired differences vary from seed to seed."""
    epochs = 8 if augmentation == "none" else 10
    e = np.arange(1, epochs + 1, dtype=float)
    if augmentation == "none":
        gap = 0.10 + 0.02 * seed + 0.04 * (e - 1)
    else:
        gap = 0.05 + 0.03 * seed + (0.02 + 0.003 * seed) * (e - 1) + 0.005 * (e - 1) ** 2
    return 1 / e, 1 / e + gap


def _expected_delta(logged, estimator):
    """What `estimator` says a policy changes the gap by, computed here from the logged curves by the
    definitions in ablation/core/curves.py: the mean over seeds of the policy's estimate minus none's."""
    def one(train, val, best, test_loss):
        gap = val - train
        low = min(max(best - 1 - 2, 0), len(gap) - 5)  # the 5 epochs centred on the best one, kept inside the run
        return {"best": gap[best - 1], "window": gap[low:low + 5].mean(), "last5": gap[-5:].mean(),
                "auc": gap.mean(), "test_loss": test_loss}

    deltas = []
    for seed in SHAPED_SEEDS:
        (p_train, p_val, p_best, p_test), (n_train, n_val, n_best, n_test) = (
            logged[a, seed] for a in ("bent", "none"))
        if estimator == "paired_auc":  # both runs over the epochs both trained
            shared = min(len(p_val), len(n_val))
            deltas.append((p_val - p_train)[:shared].mean() - (n_val - n_train)[:shared].mean())
        else:
            deltas.append(one(p_train, p_val, p_best, p_test)[estimator] - one(n_train, n_val, n_best, n_test)[estimator])
    return float(np.mean(deltas))



@pytest.fixture
def shaped(make_cfg, tmp_path):
    """none and `bent` over 3 seeds with gap curves of different shapes and lengths (_shaped_curve), so every gap
    estimator gives its own paired difference. Returns (config, {(augmentation, seed): (train, val, best epoch,
    test loss)})."""
    cfg = make_cfg("experiment_name=shaped", f"paths.reports={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "shaped")
    logged = {}
    for seed in SHAPED_SEEDS:
        for augmentation, acc in (("none", 0.9), ("bent", 0.95 + 0.004 * seed)):
            train, val = _shaped_curve(augmentation, seed)
            best = int(np.argmin(val)) + 1
            assert best < len(val)  # a finished run: its best epoch is not its last
            # An epoch limit above the epochs trained: early stopping ended both (neither is unfinished).
            _log(client, exp_id, "digits", "small_cnn", augmentation, seed, float(val[best - 1] - train[best - 1]),
                 acc, best_epoch=best, curve=(train, val), epoch_limit=20)
            logged[augmentation, seed] = (train, val, best, 1 - acc)  # _log logs test/loss as 1 - accuracy
    return cfg, logged


def test_the_gap_setting_picks_which_estimate_of_the_curves_decides(make_cfg, shaped, tmp_path):
    """report.gap=paired_auc (the default) and report.gap=auc on the same runs: different delta_gap values, each
    the one its estimator computes from the curves; every estimator's own column holds its value either way."""
    from itertools import combinations

    from ablation.core import curves

    _, logged = shaped
    expected = {e: _expected_delta(logged, e) for e in curves.ESTIMATORS}
    # The fixture separates every estimator: a report that used another would be seen.
    assert min(abs(a - b) for a, b in combinations(expected.values(), 2)) > 0.005, expected
    chosen = {}
    for estimator in ("paired_auc", "auc"):
        cfg = make_cfg("experiment_name=shaped", f"paths.reports={tmp_path}/reports",
                       f"report.gap={estimator}")
        row = pd.read_csv(report.build(cfg, out_root=tmp_path / estimator) / "summary.csv").set_index(
            "augmentation").loc["bent"]
        assert row["gap_estimator"] == estimator and row["n_seeds"] == len(SHAPED_SEEDS)
        assert row["delta_gap"] == pytest.approx(expected[estimator], abs=1e-9), estimator
        for e in curves.ESTIMATORS:
            assert row[f"delta_gap_{e}"] == pytest.approx(expected[e], abs=1e-9), (estimator, e)
        chosen[estimator] = row["delta_gap"]
    assert abs(chosen["paired_auc"] - chosen["auc"]) > 0.01


def test_correction_none_and_holm_show_raw_and_adjusted(make_cfg, synthetic):
    for correction in ("none", "holm"):
        cfg = make_cfg("experiment_name=synthetic", f"paths.reports={synthetic.paths.reports}",
                       f"report.correction={correction}")
        out = report.build(cfg)
        table = pd.read_csv(out / "summary.csv")
        policies = table[(table["model"] == "small_cnn") & (table["augmentation"] != "none")]
        if correction == "none":
            for endpoint in ("p_gap", "p_score"):
                assert np.allclose(policies[f"{endpoint}_adjusted"], policies[endpoint])
            # Uncorrected, the rule is the verdict without correction (each endpoint at alpha / 2 against the
            # uncorrected verdict's alpha: these constructed p values are nowhere between the two).
            p = np.r_[policies["p_gap"], policies["p_score"]]
            assert not ((p >= 0.025) & (p < 0.05)).any()
            assert (policies["verdict_rule"] == policies["verdict_uncorrected"]).all()
        else:
            # Holm's step-down within each endpoint's family.
            for endpoint in ("p_gap", "p_score"):
                p = policies[endpoint].to_numpy()
                order = np.argsort(p)
                expected = np.maximum.accumulate(np.minimum(1, (len(p) - np.arange(len(p))) * p[order]))
                assert np.allclose(policies[f"{endpoint}_adjusted"].to_numpy()[order], expected)
        assert "Holm" in (out / "report.html").read_text() or correction == "none"


def test_files_figures_and_failed_combinations(synthetic, tmp_path):
    out = report.build(synthetic)
    assert out == tmp_path / "reports" / "synthetic"
    for name in ("summary.md", "forest.png", "curves.png", "gaps.png", "previews.png", "heatmap.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    for image in ("forest.png", "curves.png", "gaps.png", "previews.png", "heatmap.png"):
        assert f"src='{image}'" in page
    assert page.index("class='badge'") < page.index("src='forest.png'") < page.index("class='details'")
    assert "Benjamini-Hochberg" in page and "crashy" in page and decide.HURTS in page
    md = (out / "summary.md").read_text()
    assert "## Failed combinations" in md and "loss is NaN" in md
    assert pd.read_csv(out / "failed.csv")["run"].tolist() == ["crashy/small_cnn/s0"]


def test_report_command_prints_the_decision_first(synthetic, capsys):
    report.make(synthetic)
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "verdict" in line and "model" in line)
    assert header.split()[:3] == ["model", "augmentation", "verdict"]  # two models: which block
    assert "delta test accuracy, points [raw 95% CI]" in header and "report.html" in printed and decide.HELPS in printed


def _keys(cfg, *augmentations):
    return [r.data.tags["config_hash"] for a in augmentations
            for r in runs(cfg.tracking.uri, cfg.experiment_name, f"tags.augmentation = '{a}'")]


def test_report_by_parent_run_id_finds_its_experiment_and_holds_only_its_sweep(synthetic):
    client = MlflowClient(tracking_uri=synthetic.tracking.uri)
    parent = tracking.open_parent(synthetic, {"overrides": "x"})
    keys = _keys(synthetic, "none", "good")
    assert tracking.describe_sweep(synthetic, parent, keys, [["augmentation=none,good"]]) == tracking.sweep_hash(
        list(reversed(keys)))
    other = synthetic.copy()
    other.experiment_name = "elsewhere"
    out = report.make(other, parent)
    assert out.name == "synthetic"
    assert set(pd.read_csv(out / "summary.csv")["augmentation"]) == {"none", "good"}
    assert client.get_run(parent).data.tags["sweep"] == "parent"
    assert client.get_run(parent).data.tags["sweep_hash"] == tracking.sweep_hash(keys)
    # By experiment: everything that finished, whichever sweep ran it.
    finished, failed, _ = report.runs_of(synthetic)
    assert set(finished["augmentation"]) == {"none", *EFFECTS, "late"} and set(failed["augmentation"]) == {"crashy"}


def test_a_parent_without_a_recorded_definition_reports_its_own_runs(synthetic):
    client = MlflowClient(tracking_uri=synthetic.tracking.uri)
    parent = tracking.open_parent(synthetic, {"overrides": "x"})
    assert report.runs_of(synthetic, parent)[0].empty  # the experiment's other runs are not its own
    for augmentation in ("none", "bad"):
        for r in runs(synthetic.tracking.uri, "synthetic", f"tags.augmentation = '{augmentation}'"):
            client.set_tag(r.info.run_id, "mlflow.parentRunId", parent)
    assert set(report.runs_of(synthetic, parent)[0]["augmentation"]) == {"none", "bad"}
    with pytest.raises(SystemExit) as info:
        report.make(synthetic, tracking.open_parent(synthetic, {"overrides": "y"}))
    assert info.value.code == 2


def test_empty_experiment_is_a_clear_error(make_cfg, capsys):
    with pytest.raises(SystemExit) as info:
        report.make(make_cfg("experiment_name=nothing_here"))
    assert info.value.code == 2
    assert "experiment_name: no finished runs in MLflow experiment 'nothing_here'" in capsys.readouterr().err


def test_image_tasks_without_accuracy_get_gap_verdicts_and_psnr(make_cfg, tmp_path, capsys):
    """reconstruct/inpaint runs log no accuracy: the verdict is the loss gap's, the test score psnr."""
    cfg = make_cfg("experiment_name=images", f"paths.reports={tmp_path}/reports")
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
    out = report.make(cfg)
    table = pd.read_csv(out / "summary.csv").set_index("augmentation")
    assert list(pd.read_csv(out / "summary.csv").columns[:len(report.COLUMNS)]) == report.COLUMNS
    assert table.loc["hflip", "verdict"] == decide.HELPS  # gap lower, PSNR higher
    assert table.loc["hflip", "delta_gap"] == pytest.approx(-0.01)
    assert table.loc["hflip", "score_metric"] == "psnr"
    assert table.loc["hflip", "delta_test_score"] == pytest.approx(1.0)
    assert table.loc["hflip", "delta_test_psnr"] == pytest.approx(1.0)
    assert table.loc["hflip", "test_psnr_mean"] == pytest.approx(21.2)
    assert set(table["task"]) == {"reconstruct"}
    assert table[["test_accuracy_mean", "gap_accuracy_mean", "delta_test_accuracy"]].isna().all().all()
    printed = capsys.readouterr().out
    assert "delta test psnr" in printed and "accuracy [" not in printed and decide.HELPS in printed


def test_a_setting_the_sweep_varied_splits_the_rows_and_pairs_within_it(make_cfg, tmp_path, capsys):
    """A sweep over dataset.normalize: the policy helps under one mode and hurts under the other. Merged, the two
    would cancel out; each mode is its own row, compared with the `none` of the same mode."""
    from mlflow.entities import Param

    cfg = make_cfg("experiment_name=modes", f"paths.reports={tmp_path}/reports")
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
                                              Param("augmentation.name", augmentation), Param("trainer.epochs", str(EPOCHS)),
                                              Param("tracking.uri", f"somewhere-{seed}"),
                                              Param("dataset.split_seed", str(seed))])  # follows the seed
    out = report.make(cfg)
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns[:len(report.COLUMNS)]) == report.COLUMNS
    rows = table.set_index(["setting", "augmentation"])
    assert len(table) == 6 and set(rows.index.get_level_values(0)) == {"dataset.normalize=rescale",
                                                                       "dataset.normalize=featurewise"}
    for mode, offset in effect.items():
        row = rows.loc[(f"dataset.normalize={mode}", "hflip")]
        assert row["delta_gap"] == pytest.approx(offset) and row["n_seeds"] == 5
        assert row["verdict"] == (decide.HELPS if offset < 0 else decide.WIDENS)
        # One policy name whose content differed between the modes stays one row per mode (its fingerprint is
        # constant within each).
        assert rows.loc[(f"dataset.normalize={mode}", "mixed"), "delta_gap"] == pytest.approx(offset)
    assert (out / "heatmap.png").stat().st_size > 0  # one dataset and model, two settings
    printed = capsys.readouterr().out
    assert "setting" in printed and "dataset.normalize=featurewise" in printed


def test_runs_recorded_under_the_old_key_names_are_read_under_the_new_ones(make_cfg, tmp_path):
    """Runs recorded before the task, sweep and placement keys were renamed (params task, inpaint.*, design,
    strength, force, augmentation.where, augmentation.mode) and runs recorded after them (task.name,
    augmentation.placement, sweep.*) are one table: the old params read under the new names, a host/device sweep
    split the same way whichever names its runs were recorded under."""
    from mlflow.entities import Param

    cfg = make_cfg("experiment_name=renamed", f"paths.reports={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "renamed")
    effect = {"host": -0.3, "device": 0.3}
    for seed in SEEDS:
        old = seed < 3  # seeds 0-2 recorded under the old names, 3-4 under the new
        for where, offset in effect.items():
            for augmentation in ("none", "hflip"):
                rid = _log(client, exp_id, "digits", "small_cnn", augmentation, seed,
                           0.8 + (offset if augmentation != "none" else 0.0) + 0.01 * seed, 0.9)
                client.set_tag(rid, "config_hash", f"{where}-{augmentation}-{seed}")
                if old:
                    params = [Param("augmentation.where", where), Param("augmentation.mode", "online"),
                              Param("task", "classify"), Param("inpaint.mask", "rectangle"), Param("design", "grid"),
                              Param("strength", "[0, 0.25, 0.5, 1, 2]"), Param("force", "False")]
                else:
                    params = [Param("augmentation.placement", where), Param("task.name", "classify"),
                              Param("sweep.design", "grid"), Param("sweep.levels", "[0, 0.25, 0.5, 1, 2]"),
                              Param("sweep.rerun", "False")]
                client.log_batch(rid, params=[*params, Param("seed", str(seed))])
    # An offline run recorded before placement: where=host, mode=offline.
    rid = _log(client, exp_id, "digits", "small_cnn", "hflip@offline", 0, 0.5, 0.9)
    client.log_batch(rid, params=[Param("augmentation.where", "host"), Param("augmentation.mode", "offline"),
                                  Param("task", "classify")])

    runs = tracking.load_runs(cfg.tracking, "renamed")
    for gone in ("task", "inpaint.mask", "design", "strength", "force", "augmentation.where", "augmentation.mode"):
        assert f"params.{gone}" not in runs
    assert set(runs["params.augmentation.placement"]) == {"host", "device", "offline"}
    assert runs.loc[runs["tags.augmentation"] == "hflip@offline", "params.augmentation.placement"].tolist() == ["offline"]
    assert set(runs["params.task.name"]) == {"classify"}
    assert set(runs["params.sweep.design"].dropna()) == {"grid"}
    assert runs["params.task.mask"].notna().sum() == 12  # inpaint.mask of the old runs

    table = pd.read_csv(report.make(cfg) / "summary.csv")
    rows = table.set_index(["setting", "augmentation"])
    for where, offset in effect.items():
        row = rows.loc[(f"augmentation.placement={where}", "hflip")]
        assert row["n_seeds"] == 5 and row["delta_gap"] == pytest.approx(offset)  # old and new runs paired alike
    assert ("augmentation.placement=host", "hflip@offline") in rows.index  # offline compares within the host's block


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
    assert resnet.loc["good [aaaaaaaa]", "verdict"] == decide.HELPS
    assert resnet.loc["good [bbbbbbbb]", "verdict"] == decide.HURTS  # gap 5.0 and accuracy 0.5
    assert table["setting"].isna().all()  # nothing else varied: no setting
    assert "good" in set(table[table["model"] == "small_cnn"]["augmentation"])


@pytest.mark.slow
def test_report_page_opens_with_the_decision_in_a_real_browser(synthetic, tmp_path):
    """report.html rendered by headless Chromium at a laptop's screen size; the screenshot is kept in the test's
    folder (report.png). The first screen holds the verdict badges and the forest plots; the wide details
    table scrolls inside its own box instead of widening the page."""
    import subprocess

    import matplotlib.image

    from conftest import browser_or_skip

    browser_or_skip(driver=False)
    out = report.build(synthetic)
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1440,900", f"--screenshot={shot}", (out / "report.html").as_uri()],
                   check=False, capture_output=True, timeout=120, cwd=tmp_path)
    image = matplotlib.image.imread(shot)[..., :3]
    assert image.shape[:2] == (900, 1440)
    # Each verdict's badge colour is on the first screen: the decision is readable without scrolling.
    for verdict in (decide.HELPS, decide.HURTS, decide.COSTS, decide.WIDENS):
        rgb = np.array([int(plots.VERDICT_COLORS[verdict][i:i + 2], 16) for i in (1, 3, 5)]) / 255
        assert (np.abs(image - rgb).max(axis=-1) < 0.02).sum() > 50, verdict
    # The forest plot is on the first screen too (its image is fetched and drawn: many distinct colours).
    page = (out / "report.html").read_text()
    assert "<div class='details'>" in page and "overflow-x:auto" in page
    assert len(np.unique((image * 255).astype(int).reshape(-1, 3), axis=0)) > 200


def test_undecided_rows_get_the_seeds_of_a_confirmatory_sweep_and_its_command(make_cfg, tmp_path, capsys):
    """A noisy policy over 3 seeds: undecided, with the seeds a power calculation plans from the measured spreads
    and the margins (not from the effect seen), and the command of a confirmatory sweep on fresh seeds in an
    experiment of its own (an experiment config of that name exists, so the command uses it)."""
    cfg = make_cfg("experiment_name=quick", f"paths.reports={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "quick")
    offsets = [-0.05, -0.12, 0.0]  # mean -0.057, sd 0.06: t = 1.6 over 3 seeds
    scores = [0.01, -0.01, 0.0]  # +1, -1 and 0 points
    for seed in range(3):
        _log(client, exp_id, "digits", "small_cnn", "none", seed, 0.5, 0.9)
        _log(client, exp_id, "digits", "small_cnn", "hflip", seed, 0.5 + offsets[seed], 0.9 + scores[seed])
    row = pd.read_csv(report.make(cfg) / "summary.csv").set_index("augmentation").loc["hflip"]
    assert row["verdict"] == decide.UNDECIDED
    # The margins: 10% of none's errors (10 points), and 10% of none's mean gap over its epochs (paired_auc).
    assert row["margin"] == pytest.approx(1.0)
    none_gap = 0.5 + 0.01 * np.mean((np.arange(1, EPOCHS + 1) - 3) ** 2)
    assert row["gap_margin"] == pytest.approx(0.1 * none_gap)
    # Equivalence needs both endpoints shown within their margins: two one-sided tests at alpha each.
    expected = max(decide.seeds_for(0.1 * none_gap, np.std(offsets, ddof=1), 0.1),
                   decide.seeds_for(1.0, POINTS * np.std(scores, ddof=1), 0.1))
    assert row["seeds_needed"] == expected
    n = int(row["seeds_needed"])
    assert 3 < n <= decide.MAX_SEEDS
    printed = capsys.readouterr().out
    seeds = ",".join(str(s) for s in range(3, 3 + n))  # fresh seeds, after the ones already run
    assert (f"python -m ablation -m experiment=quick augmentation=none,hflip experiment_name=quick_confirm "
            f"seed={seeds}") in printed


def test_failed_runs_keep_a_policy_undecided_and_say_how_many(make_cfg, tmp_path, capsys):
    """A policy that helps on the seeds that finished but failed on one: never recommended, its verdict waits for
    that seed, and the flags keep what the rule would say."""
    cfg = make_cfg("experiment_name=lossy", f"paths.reports={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "lossy")
    gaps, accs, _ = EFFECTS["good"]
    for seed in SEEDS:
        _log(client, exp_id, "digits", "small_cnn", "none", seed, 0.8, 0.9)
        _log(client, exp_id, "digits", "small_cnn", "good", seed, 0.8 + gaps[seed], 0.9 + accs[seed],
             status="FAILED" if seed == 4 else "FINISHED")
    out = report.make(cfg)
    row = pd.read_csv(out / "summary.csv").set_index("augmentation").loc["good"]
    assert row["verdict"] == decide.failed_verdict(1, 5) == "undecided: 1/5 runs failed"
    assert row["failed"] == "1/5" and row["n_seeds"] == 4
    assert row["verdict_rule"] == decide.HELPS and "failed 1/5" in row["flags"] and "else: helps" in row["flags"]
    printed = capsys.readouterr().out
    assert "failed runs: good (1/5)" in printed


def test_a_step_valued_accuracy_is_floored_at_one_test_image(make_cfg, tmp_path):
    """One test image fewer right at every seed: paired differences with no spread. The floor (one image of the
    logged data/n_test, in points) keeps three identical steps from being a significant loss."""
    cfg = make_cfg("experiment_name=steps", f"paths.reports={tmp_path}/reports")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "steps")
    n_test = 360
    for seed in range(3):
        _log(client, exp_id, "digits", "small_cnn", "none", seed, 0.8, 0.9, n_test=n_test)
        _log(client, exp_id, "digits", "small_cnn", "hflip", seed, 0.8, 0.9 - 1 / n_test, n_test=n_test)
    row = pd.read_csv(report.build(cfg) / "summary.csv").set_index("augmentation").loc["hflip"]
    step = 100 / n_test
    assert row["score_step"] == pytest.approx(step)
    assert row["delta_test_score"] == pytest.approx(-step)
    # sd floored at one step: t = sqrt(3), p = 0.23 (without the floor: sd 0 and p = 0, `hurts`).
    assert row["p_score"] == pytest.approx(2 * stats.t.sf(np.sqrt(3), 2), rel=1e-6)
    assert row["verdict"] not in decide.HARM
