"""Per-class effects: a run's per-class test accuracy and confusion matrix, and the report's policy x class
deltas against `none`, on constructed runs where the hurt class is known."""
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from scipy import stats
from test_report import _log

from ablation import tracking
from ablation.lenses import class_effects, per_class
from ablation.report import advice
from ablation.report import build as report
from ablation.training.run import run

SEEDS = range(6)
CLASSES = [str(c) for c in range(10)]
HURT = "6"  # the class `flip` costs 20 points; every other class moves by seed noise only


def _class_accuracies(policy: str, seed: int, rng) -> dict[str, float]:
    base = np.random.default_rng([seed]).uniform(0.85, 0.95, len(CLASSES))  # the seed's none, per class
    if policy == "none":
        return dict(zip(CLASSES, base))
    noise = rng.normal(0, 0.01, len(CLASSES))
    hurt = np.array([0.20 if c == HURT and policy == "flip" else 0.0 for c in CLASSES])
    return dict(zip(CLASSES, base + noise - hurt))


def _frame(rng) -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        for policy in ("none", "flip", "other"):
            accs = _class_accuracies(policy, seed, rng)
            rows.append({"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": policy,
                         "seed": str(seed), **{f"metrics.test_class/{c}/accuracy": a for c, a in accs.items()}})
    return pd.DataFrame(rows)


def test_the_hurt_class_is_found_and_matches_scipys_paired_t():
    runs = _frame(np.random.default_rng(0))
    table = class_effects.effects(runs)
    assert len(table) == 2 * len(CLASSES)
    significant = table[table["significant"]]
    assert list(zip(significant["augmentation"], significant["class"])) == [("flip", HURT)]
    cell = table.set_index(["augmentation", "class"]).loc[("flip", HURT)]
    column = f"metrics.test_class/{HURT}/accuracy"
    flip = runs[runs["augmentation"] == "flip"].set_index("seed")[column]
    none = runs[runs["augmentation"] == "none"].set_index("seed")[column]
    d = (flip - none.loc[flip.index]).to_numpy() * 100
    assert cell["delta_points"] == pytest.approx(d.mean())
    assert cell["p"] == pytest.approx(stats.ttest_rel(flip, none.loc[flip.index]).pvalue)
    interval = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(interval)
    # Benjamini-Hochberg over all 20 cells, as scipy computes it.
    assert table["p_adjusted"].to_numpy() == pytest.approx(stats.false_discovery_control(table["p"].to_numpy()))


def _counted(correct: dict[str, list[tuple[int, int]]], images=36) -> pd.DataFrame:
    """Runs whose class accuracies count images: {class: [(none's correct, the policy's correct) per seed]}."""
    seeds = range(len(next(iter(correct.values()))))
    return pd.DataFrame([{"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": policy,
                          "seed": seed, **{f"metrics.test_class/{c}/accuracy": pairs[seed][k] / images
                                           for c, pairs in correct.items()}}
                         for seed in seeds for k, policy in enumerate(("none", "flip"))])


def test_three_seeds_one_image_fewer_each_in_a_36_image_class_decide_nothing():
    """Each seed gets one image of class 0 fewer right: identical differences of -2.8 points, whose spread a plain
    t test takes as zero (p = 0, or 5e-13 with rounding noise). Floored at one image, t = -sqrt(3): p = 0.23."""
    table = class_effects.effects(_counted({"0": [(30, 29), (33, 32), (35, 34)]}))
    [cell] = table.to_dict("records")
    step = 100 / 36
    assert cell["floor_points"] == pytest.approx(step) and cell["delta_points"] == pytest.approx(-step)
    assert cell["p"] == pytest.approx(2 * stats.t.sf(np.sqrt(3), 2)) and cell["p"] > 0.2
    assert not cell["significant"]
    half = stats.t.ppf(0.975, 2) * step / np.sqrt(3)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((-step - half, -step + half))


def test_one_image_changes_under_no_effect_are_never_significant_at_three_seeds():
    """The symmetric null of step-valued scores, enumerated: at each of 3 seeds the policy gets one image of a
    36-image class more, fewer or the same right, each pattern one class. The old test called the two patterns
    with identical changes (2/27 = 7% of cells) significant; floored, no pattern comes near 5%."""
    import itertools
    patterns = list(itertools.product((-1, 0, 1), repeat=3))
    table = class_effects.effects(_counted({str(i): [(30 + s, 30 + s + c) for s, c in enumerate(p)]
                                            for i, p in enumerate(patterns)}))
    assert len(table) == 27 and (table["p"] >= 0.2).all() and not table["significant"].any()


def test_the_step_is_read_per_seed_so_splits_of_different_sizes_are_not_pooled():
    """A class of 36 test images under seed 0 and 35 under seed 1 (the split follows the seed): one image is
    100/36 points, not the 100/1260 that the two seeds' accuracies pooled would suggest."""
    runs = pd.DataFrame([{"dataset": "d", "model": "m", "setting": "", "augmentation": a, "seed": s,
                          "metrics.test_class/0/accuracy": k / n}
                         for s, n, pairs in ((0, 36, (30, 29)), (1, 35, (31, 31)))
                         for a, k in zip(("none", "flip"), pairs)])
    assert class_effects.floors(runs, class_effects.class_columns(runs)) == {"0": pytest.approx(100 / 36)}
    continuous = runs.assign(**{"metrics.test_class/0/accuracy": np.random.default_rng(0).uniform(0.8, 1, 4)})
    assert class_effects.floors(continuous, class_effects.class_columns(runs)) == {"0": 0.0}  # not a count


def test_a_policy_that_helps_overall_and_hurts_a_class_is_named():
    table = class_effects.effects(_frame(np.random.default_rng(1)))
    summary = pd.DataFrame([{"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": "flip",
                             "verdict": "helps"}])
    lines = advice.harm_lines(table, summary)
    assert len(lines) == 1 and lines[0].startswith(f"flip: helps overall, hurts class {HURT} (-")
    assert "other" not in " ".join(lines)


def test_classes_are_ordered_naturally_and_missing_ones_are_no_error():
    runs = pd.DataFrame({"metrics.test_class/10/accuracy": [1.0], "metrics.test_class/2/accuracy": [1.0],
                         "metrics.test_class/cat/accuracy": [1.0]})
    assert list(class_effects.class_columns(runs)) == ["2", "10", "cat"]
    assert class_effects.effects(pd.DataFrame()).empty  # nothing logged per class: no table, no error


def test_the_report_shows_whom_a_policy_hurts(make_cfg, tmp_path):
    cfg = make_cfg("experiment_name=classes", f"paths.reports={tmp_path}/reports", lean=False)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp_id = tracking.experiment_id(client, cfg.tracking, "classes")
    rng = np.random.default_rng(3)
    for seed in SEEDS:
        gap, acc = 0.8 + rng.normal(0, 0.1), 0.9 + rng.normal(0, 0.02)
        for policy, d_gap, d_acc in (("none", 0, 0), ("flip", -0.3, 0.004)):
            rid = _log(client, exp_id, "digits", "small_cnn", policy, seed, gap + d_gap + rng.normal(0, 0.01),
                       acc + d_acc + rng.normal(0, 0.001))
            accs = _class_accuracies(policy, seed, rng)
            client.log_batch(rid, metrics=[Metric(per_class.metric_key(c), a, 0, 0) for c, a in accs.items()])
    out = report.build(cfg)
    cells = pd.read_csv(out / "class_effects.csv", dtype={"class": str})
    assert cells.loc[cells["significant"], "class"].tolist() == [HURT]
    text = (out / "summary.md").read_text()
    assert f"flip: helps overall, hurts class {HURT} (-" in text
    html = (out / "report.html").read_text()
    assert "Per-class effects" in html and "classes.png" in html and (out / "classes.png").stat().st_size > 0


def test_a_run_logs_per_class_accuracy_and_its_confusion_matrix(make_cfg, tmp_path):
    cfg = make_cfg("experiment_name=per_class", "trainer.epochs=1", "tracking.log_model=false", lean=False)
    result = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    metrics = client.get_run(result["run_id"]).data.metrics
    keys = sorted(k for k in metrics if k.startswith("test_class/"))
    assert keys == sorted(per_class.metric_key(c) for c in CLASSES)
    folder = tmp_path / "artifacts"
    table = pd.read_csv(client.download_artifacts(result["run_id"], "per_class.csv", str(folder)))
    matrix = pd.read_csv(client.download_artifacts(result["run_id"], "confusion.csv", str(folder)), index_col=0)
    assert matrix.shape == (10, 10) and (matrix.sum(axis=1).to_numpy() == table["images"].to_numpy()).all()
    assert (np.diag(matrix.to_numpy()) == table["correct"].to_numpy()).all()
    # The per-class scores weighted by each class's test images are the run's test accuracy (from evaluate).
    assert table["correct"].sum() / table["images"].sum() == pytest.approx(metrics["test/accuracy"], abs=1e-6)
    assert {m: metrics[per_class.metric_key(c)] for m, c in zip(table["class"], table["class"].astype(str))} == \
        pytest.approx(dict(zip(table["class"], table["accuracy"])))
    names = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"per_class.csv", "confusion.csv", "confusion.png"} <= names


def test_the_confusion_matrix_counts_each_pair():
    matrix = per_class.confusion(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert per_class.accuracies(matrix) == pytest.approx([0.5, 1.0, 2 / 3])
    assert per_class.metric_key("a/b?c") == "test_class/a_b_c/accuracy"
