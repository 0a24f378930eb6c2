"""The statistics of the decision (ablation/core/stats.py, decide.py, curves.py) checked against independent
computations, each failure mode a statistical review found closed by a constructed case, and every error rate a
verdict claims shown by simulating whole sweeps through the report's own code (ablation/report/simulate.py), from a
noise model fitted to real digits runs (tests/data/noise_digits.json, written by scripts/decision_study.py fit).

Simulated rates are asserted within the simulation's own binomial tolerance of their target: rate <= target +
3 sqrt(target (1 - target) / sweeps)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ablation.core import curves, stats
from ablation.report import advice, decide, simulate, summary

NOISE = Path(__file__).parent / "data" / "noise_digits.json"
SWEEPS = 1000
ALPHA = 0.05
TOLERANCE = 3 * np.sqrt(ALPHA * (1 - ALPHA) / SWEEPS)
IMAGE = 100 / 360  # one digits test image, in points


def test_paired_equals_scipy_one_sample_t_row_by_row_with_missing_seeds():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 0.3, size=(6, 5))
    d[2, 4] = d[5, 0] = np.nan
    got = stats.paired(d)
    for row, out in enumerate(d):
        x = out[np.isfinite(out)]
        test = sps.ttest_1samp(x, 0.0)
        low, high = test.confidence_interval(0.95)
        assert got["n"][row] == len(x)
        assert got["mean"][row] == pytest.approx(x.mean(), abs=1e-12)
        assert got["sd"][row] == pytest.approx(x.std(ddof=1), abs=1e-12)
        assert (got["low"][row], got["high"][row]) == pytest.approx((low, high), abs=1e-12)
        assert got["p"][row] == pytest.approx(test.pvalue, rel=1e-9)
    one = stats.paired(np.array([[0.2, np.nan, np.nan]]))
    assert np.isnan(one["low"][0]) and np.isnan(one["p"][0])  # a single seed has no interval


def test_corrections_against_hand_computed_values():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1, made monotone.
    assert stats.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Benjamini-Hochberg: p * m / rank, made monotone from the top: 0.04*4/4, 0.03*4/3, 0.01*4/2, 0.005*4/1.
    assert stats.adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.adjust(p, "none") == pytest.approx(p)
    with_missing = stats.adjust(np.array([0.01, np.nan, 0.02]), "holm")
    assert np.isnan(with_missing[1]) and with_missing[[0, 2]] == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="report.correction: expected one of bh|holm|none, got 'bonf'"):
        stats.adjust(p, "bonf")


def test_tost_against_hand_computations():
    x = np.array([[0.1, -0.2, 0.05, 0.0, 0.1]])
    s = stats.paired(x)
    lower = sps.ttest_1samp(x[0], -1.0, alternative="greater").pvalue
    upper = sps.ttest_1samp(x[0], 1.0, alternative="less").pvalue
    assert stats.tost(s, 1.0)[0] == pytest.approx(max(lower, upper))


def _decide(gap, score, margin=0.3, floor=0.0, correction="none", **kwargs):
    out = decide.decide(np.atleast_2d(gap), np.atleast_2d(score), correction, ALPHA, margin, score_floor=floor,
                        gap_margin=kwargs.pop("gap_margin", 0.03), **kwargs)
    return out


@pytest.mark.parametrize("gap, score, expected", [
    ([-0.3, -0.31, -0.29, -0.3, -0.32], [0.6, 0.5, 0.7, 0.55, 0.65], decide.HELPS),
    ([0.01, -0.01, 0.0, 0.02, -0.02], [2.0, 2.5, 2.1, 3.0, 2.2], decide.HELPS),  # score up, gap unchanged
    ([-0.3, -0.31, -0.29, -0.3, -0.32], [3.0, -5.0, 2.0, -6.0, 1.0], decide.COST_UNCLEAR),
    ([0.3, -0.3, 0.25, -0.28, 0.02], [1.0, -1.0, 0.0, 0.5, -0.4], decide.UNDECIDED),
    ([0.001, -0.001, 0.0, 0.002, -0.002], [0.01, -0.01, 0.0, 0.005, -0.004], decide.EQUIVALENT),
    ([0.2, 0.22, 0.19, 0.21, 0.2], [0.1, -0.2, 0.0, 0.2, -0.1], decide.WIDENS),
    ([-0.1, -0.11, -0.09, -0.1, -0.12], [-17.0, -18.0, -16.0, -17.0, -17.5], decide.COSTS),
    ([0.01, -0.02, 0.03, -0.01, 0.0], [-4.0, -5.0, -4.5, -4.0, -5.0], decide.HURTS),
    ([0.2, 0.22, 0.19, 0.21, 0.2], [-4.0, -5.0, -4.5, -4.0, -5.0], decide.HURTS),  # wider and worse
])
def test_every_verdict_of_the_rule(gap, score, expected):
    assert _decide(gap, score)["verdict"][0] == expected


def _family(rng, k, seeds=5, sd=1.0):
    """k - 1 policies with no effect (gap and score noise only): the rest of a sweep's family."""
    return rng.normal(0, 0.01, size=(k - 1, seeds)), rng.normal(0, sd, size=(k - 1, seeds))


def test_finding_1_a_measured_accuracy_loss_is_never_corrected_away_into_helps():
    """A BH family of 20: one policy's gap clearly lower, its test score -0.60 points [-0.94, -0.26] (raw p
    0.008; adjusted over the family it is no longer significant). The old rule said `helps`."""
    rng = np.random.default_rng(0)
    gap, score = _family(rng, 20)
    loss = np.array([-0.60, -0.60, -0.60, -0.60, -0.60]) + np.array([-0.25, 0.25, -0.15, 0.15, 0.0]) * 1.1
    out = decide.decide(np.r_[[[-0.3, -0.31, -0.29, -0.3, -0.32]], gap], np.r_[[loss], score], "bh", ALPHA,
                        margin=1.0, gap_margin=0.03)
    assert out["score"]["high"][0] < 0 and out["score"]["p"][0] < 0.05  # a measured loss, at the raw level
    assert out["score_p_adjusted"][0] > ALPHA / 2  # not beyond the correction
    assert out["verdict"][0] == decide.COST_UNCLEAR != decide.HELPS
    # Whatever the family's size and margin: an interval below zero is never helps.
    for k in (2, 5, 20, 50):
        g, s = _family(rng, k)
        v = decide.decide(np.r_[[[-0.3, -0.31, -0.29, -0.3, -0.32]], g], np.r_[[loss], s], "bh", ALPHA,
                          margin=5.0, gap_margin=0.03)["verdict"][0]
        assert v != decide.HELPS


def test_finding_1_the_rule_is_monotone_in_a_measured_cost():
    """A small measured cost (-0.3 [-0.5, -0.1]) and a larger uncertain one (-0.4 [-0.9, +0.1]): neither is
    helps at the default margin (10% more errors than none at 97%: 0.3 points)."""
    gap = [-0.3, -0.31, -0.29, -0.3, -0.32]
    small = -0.3 + np.array([-0.16, 0.16, -0.08, 0.08, 0.0])
    large = -0.4 + np.array([-0.5, 0.5, -0.25, 0.25, 0.0])
    out = _decide([gap, gap], [small, large], margin=0.3, gap_margin=0.03)
    assert out["score"]["high"][0] < 0 < out["score"]["high"][1]
    assert out["verdict"][0] in (decide.COSTS, decide.COST_UNCLEAR) and out["verdict"][1] == decide.COST_UNCLEAR


def test_finding_1_a_wider_gap_is_shown_on_a_row_that_helps():
    """A significantly higher score with a significantly wider gap: helps on the score, and the row says the gap
    is wider (the old rule said helps and nothing else)."""
    out = _decide([0.2, 0.22, 0.19, 0.21, 0.2], [2.0, 2.5, 2.1, 3.0, 2.2])
    assert out["verdict"][0] == decide.HELPS and out["gap_wider"][0]


@pytest.fixture(scope="module")
def noise():
    return simulate.NoiseModel.load(NOISE)


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_finding_2_good_policies_are_not_called_harmful(noise, seeds):
    """22 policies that truly lower the gap and leave the test score alone (the old single family marked at
    least one `hurts` or `costs accuracy` in 13.6% of sweeps at 5 seeds): false harm in at most 5% of sweeps."""
    scenario = simulate.Scenario(effect_gap=-3 * noise.sd_gap)
    rates = simulate.rates(noise, SWEEPS, 22, seeds, scenario, "bh", seed=seeds)
    assert rates["sweeps_harm"] <= ALPHA + TOLERANCE
    assert rates["sweeps_effect"] <= ALPHA + TOLERANCE  # no wrong claim of any kind either


@pytest.mark.parametrize("correction", ["bh", "holm"])
@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_no_true_effect_gives_any_effect_verdict_in_at_most_alpha_of_sweeps(noise, seeds, correction):
    """20 policies with no true effect: the share of sweeps with any verdict that claims an effect stays within
    alpha. It is near alpha, not far below it: each endpoint's family spends alpha / 2."""
    rates = simulate.rates(noise, SWEEPS, 20, seeds, simulate.Scenario(), correction, seed=seeds)
    assert rates["sweeps_effect"] <= ALPHA + TOLERANCE
    assert rates["sweeps_effect"] >= 0.4 * ALPHA  # the bound is used, not vacuous
    assert rates["sweeps_equivalent"] == 0  # equivalence under no effect is right, never wrong


def test_without_correction_a_sweep_finds_effects_that_are_not_there(noise):
    rates = simulate.rates(noise, SWEEPS, 20, 5, simulate.Scenario(), "none", seed=1)
    assert rates["sweeps_effect"] > 0.3  # 40 tests at 2.5% each: about one false verdict per sweep


@pytest.mark.parametrize("scenario", [
    simulate.Scenario(bad_seeds=0.1),  # skewed noise: 10% bad seeds
    simulate.Scenario(step=IMAGE),  # step-valued accuracy
    simulate.Scenario(missing=0.2, failed=0.1),  # missing seeds and failed runs
    simulate.Scenario(effect_gap=-3 * 0.0119, bad_seeds=0.1, step=IMAGE),  # every policy good on the gap alone
], ids=["skewed", "steps", "missing-failed", "all-gap-skewed-steps"])
def test_error_rates_hold_in_every_scenario(noise, scenario):
    rates = simulate.rates(noise, SWEEPS, 20, 5, scenario, "bh", seed=7)
    assert rates["sweeps_effect"] <= ALPHA + TOLERANCE
    assert rates["sweeps_harm"] <= ALPHA + TOLERANCE
    assert rates["sweeps_helps"] <= ALPHA + TOLERANCE


def test_some_effective_policies_helps_is_right_and_harm_is_not_invented(noise):
    """5 policies of 20 like `shift` on digits (gap -0.070, score +2.1 points), 5 that cost 1 point, 10 with
    nothing: helps goes to the shift-like ones at 10 seeds, harm claims only to the costly ones."""
    gap = np.r_[np.full(5, -0.070), np.zeros(15)]
    score = np.r_[np.full(5, 2.1), np.full(5, -1.0), np.zeros(10)]
    scenario = simulate.Scenario(effect_gap=tuple(gap), effect_score=tuple(score))
    v = simulate.decided(noise, SWEEPS, 20, 10, scenario, "bh", seed=3)
    wrong = simulate.wrong(v, scenario, 20)
    assert wrong["harm"].any(axis=1).mean() <= ALPHA + TOLERANCE
    assert wrong["helps"].any(axis=1).mean() <= ALPHA + TOLERANCE
    assert (v[:, :5] == decide.HELPS).mean() > 0.9
    assert (v[:, 5:10] == decide.HELPS).mean() == 0  # a 1-point cost is more than the 0.3-point margin


def test_power_grows_with_seeds_for_a_real_effect(noise):
    scenario = simulate.Scenario(effect_gap=(-0.070,) + (0.0,) * 19, effect_score=(2.1,) + (0.0,) * 19)
    shares = [(simulate.decided(noise, 300, 20, n, scenario, "bh", seed=n)[:, 0] == decide.HELPS).mean()
              for n in (3, 5, 10)]
    assert shares[0] < shares[1] < shares[2] and shares[2] > 0.8


def test_finding_3_looking_again_is_a_confirmatory_sweep_on_fresh_seeds(noise):
    """The old advice: add seeds to the same rows and test again (0.05 became 8.2% after one round), with a
    target planned from the effect seen (99% of no-effect sweeps told to add seeds, median 45). Now: a
    confirmatory sweep on fresh seeds in its own experiment, sized from the spreads and the margins alone."""
    # The plan comes from the spreads and the margins (equivalence of both endpoints, 80% power), never from the
    # effect seen: noisier rows need more seeds, and a row with nothing to find is sized like any other.
    planned = decide.seeds_needed(decide.UNDECIDED, 0.02, 1.0, 1.0, 0.03, ALPHA)
    assert planned == max(decide.seeds_for(0.03, 0.02, 2 * ALPHA), decide.seeds_for(1.0, 1.0, 2 * ALPHA))
    assert decide.seeds_needed(decide.UNDECIDED, 0.02, 1.5, 1.0, 0.03, ALPHA) > planned
    assert decide.seeds_needed(decide.COST_UNCLEAR, 0.02, 1.0, 1.0, 0.03, ALPHA) == decide.seeds_for(1.0, 1.0, ALPHA)
    assert np.isnan(decide.seeds_needed(decide.HELPS, 0.02, 1.0, 1.0, 0.03, ALPHA))
    table = pd.DataFrame([{"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": "rotate",
                           "verdict": decide.UNDECIDED, "seeds_needed": 12.0, "n_seeds": 5, "max_seed": 4,
                           "unfinished": False, "underfits": False, "failed": "0/5", "epoch_limit": 60.0,
                           "score_metric": "accuracy", "delta_train_clean_score": 0.0}])
    line = advice.lines(table, "digits_ablation")[-1]
    assert "experiment_name=digits_ablation_confirm" in line and "seed=5,6,7" in line and "seed=0" not in line
    # One round of the advice under no effect: the confirmatory report, deciding its fresh seeds alone, keeps
    # its error rate (a second, independent fixed-sample test), where pooling old and new seeds would not.
    first = simulate.decided(noise, SWEEPS, 20, 5, simulate.Scenario(), "bh", seed=11)
    again = simulate.decided(noise, SWEEPS, 20, 10, simulate.Scenario(), "bh", seed=12)
    confirm = np.where(first == decide.UNDECIDED, again, decide.UNDECIDED)
    assert np.isin(confirm, decide.EFFECTS).any(axis=1).mean() <= ALPHA + TOLERANCE


def test_finding_4_identical_step_valued_differences_decide_nothing_by_themselves():
    """Two seeds that each get one test image fewer right used to give `hurts` (sd 0, p 0); three that each get
    one more, `helps`."""
    fewer = _decide([0.01, -0.01], [-IMAGE, -IMAGE], floor=IMAGE, margin=0.3)
    assert fewer["score"]["p"][0] > ALPHA and fewer["verdict"][0] not in decide.HARM
    more = _decide([0.01, -0.01, 0.0], [IMAGE, IMAGE, IMAGE], floor=IMAGE, margin=0.3)
    assert more["score"]["p"][0] == pytest.approx(2 * sps.t.sf(np.sqrt(3), 2)) and more["verdict"][0] != decide.HELPS
    # Without the floor (the old rule), the same differences are `hurts`.
    assert _decide([0.01, -0.01], [-IMAGE, -IMAGE], margin=0.3)["verdict"][0] == decide.HURTS


def test_finding_5_the_same_gap_curve_stopped_at_30_and_60_epochs_has_no_delta():
    t = np.arange(1, 61)
    curve = 0.3 * (1 - np.exp(-t / 15))
    assert curves.paired(curve[:30], curve) == pytest.approx(0.0, abs=1e-12)
    assert curves.paired(curve, curve[:30]) == pytest.approx(0.0, abs=1e-12)
    auc = curves.gaps(np.zeros(30), curve[:30], 30, 0, 0)["auc"] - curves.gaps(np.zeros(60), curve, 60, 0, 0)["auc"]
    assert auc == pytest.approx(-0.054, abs=0.002)  # what the per-run auc charges the shorter run


def test_finding_5_different_training_lengths_give_no_false_gap_verdicts():
    """Policies that train 40-60 epochs against a baseline that trains 20-35, with the same gap curve: the
    per-run auc finds a wider gap in most sweeps, paired_auc within alpha."""
    found = {"auc": [], "paired_auc": []}
    for sweep in range(200):
        pairs = [simulate.training_lengths(5, policy_epochs=(40, 60), baseline_epochs=(20, 35), seed=1000 * sweep + p)
                 for p in range(6)]
        for name in found:
            d = np.concatenate([p[name] for p in pairs])
            out = decide.decide(d, np.zeros_like(d), "bh", ALPHA, 0.3, gap_margin=0.03)
            found[name].append(bool(out["gap_wider"].any() | (out["verdict"] == decide.WIDENS).any()))
    assert np.mean(found["auc"]) > 0.5
    assert np.mean(found["paired_auc"]) <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 200)


def test_finding_6_failed_seeds_and_unfinished_training_leave_a_row_undecided():
    gap, score = [-0.3, -0.31, -0.29], [0.6, 0.5, 0.7]
    out = _decide([gap, gap, gap], [score, score, score], failed=[2, 0, 0], total=[5, 3, 3],
                  unfinished=[False, True, False])
    assert list(out["verdict"]) == ["undecided: 2/5 runs failed", decide.UNFINISHED, decide.HELPS]
    assert list(out["verdict_rule"]) == [decide.HELPS] * 3  # what the rule says is kept


def _runs(effects: dict, seeds=5, n_test=360, failed=(), unfinished=()):
    """per_run-shaped rows: each policy's offsets from none (gap, accuracy in points) per seed."""
    rows = []
    rng = np.random.default_rng(1)
    for seed in range(seeds):
        base_gap, base_acc = 0.3 + rng.normal(0, 0.05), 97.0 + rng.normal(0, 1)
        for policy, (gaps, accs) in {"none": ([0] * seeds, [0] * seeds), **effects}.items():
            if (policy, seed) in failed:
                continue
            rows.append({"dataset": "digits", "model": "small_cnn", "setting": "", "task": "classify",
                         "augmentation": policy, "seed": seed, "score_metric": "accuracy",
                         "test_score": base_acc + accs[seed], "train_score": 100.0, "gap": base_gap + gaps[seed],
                         "gap_curve": np.full(10, base_gap + gaps[seed]),
                         **{f"gap_{e}": base_gap + gaps[seed] for e in curves.RUN_ESTIMATORS},
                         "score_step": 100 / n_test, "unfinished": (policy, seed) in unfinished, "mode": "online",
                         **{c: np.nan for c in ("test_accuracy", "test_psnr", "test_mae", "gap_accuracy",
                                                "gap_loss", "time_total_s", "images_per_s", "time_expand_s",
                                                "expanded_bytes", "time_generator_s", "sample_affinity",
                                                "epoch_limit", "epochs_trained", "best_epoch")}})
    return pd.DataFrame(rows)


def test_finding_6_and_8_through_the_report_table():
    good = ([-0.1, -0.11, -0.09, -0.1, -0.12], [0.6, 0.5, 0.7, 0.55, 0.65])
    runs = _runs({"crashy": good, "late": good, "good": good}, failed=[("crashy", 3), ("crashy", 4)],
                 unfinished=[("late", s) for s in range(3)])
    failed = pd.DataFrame({"dataset": ["digits"] * 2, "model": ["small_cnn"] * 2, "augmentation": ["crashy"] * 2,
                           "seed": [3, 4]})
    table = summary.summary(runs, summary.options(), failed).set_index("augmentation")
    assert table.loc["crashy", "verdict"] == "undecided: 2/5 runs failed" and table.loc["crashy", "failed"] == "2/5"
    assert table.loc["late", "verdict"] == decide.UNFINISHED and "else: helps" in table.loc["late", "flags"]
    assert table.loc["good", "verdict"] == decide.HELPS and table.loc["good", "failed"] == "0/5"
    text = " ".join(advice.lines(table.reset_index(), "digits_ablation"))
    assert "failed runs" in text and "crashy (2/5)" in text


def test_finding_7_the_margin_is_relative_to_the_baselines_errors_by_default():
    base = pd.DataFrame({"test_score": [97.0, 97.0]})
    assert summary.margins("accuracy", base, summary.options()) == pytest.approx((0.3, 0.1))
    absolute = summary.options({"margin": {"accuracy": 1.0}})
    assert summary.margins("accuracy", base, absolute) == pytest.approx((1.0, 1 / 3))
    assert summary.margins("psnr", base, summary.options())[0] == 0.5
    # The non-inferiority interval is adjusted for the policies selected (Benjamini-Yekutieli): R of k.
    selected = np.array([[True, True, False, False]])
    assert decide.ni_level(selected, ALPHA, "bh") == pytest.approx(1 - 2 * ALPHA / 4)
    assert decide.ni_level(selected, ALPHA, "holm") == pytest.approx(1 - ALPHA / 4)
    assert decide.ni_level(selected, ALPHA, "none") == pytest.approx(1 - ALPHA)


def test_finding_8_underfits_asks_for_an_interval_not_only_a_mean():
    noisy = ([-0.1] * 5, [0.0] * 5)
    runs = _runs({"noisy": noisy, "clear": noisy})
    runs.loc[runs["augmentation"] == "noisy", "train_score"] = 100.0 + np.array([-30.0, 10.0, -25.0, 12.0, 3.0])
    runs.loc[runs["augmentation"] == "clear", "train_score"] = 100.0 + np.array([-6.0, -6.5, -5.5, -6.2, -6.1])
    table = summary.summary(runs, summary.options()).set_index("augmentation")
    assert table.loc["noisy", "delta_train_clean_score"] < -5 and not table.loc["noisy", "underfits"]
    assert table.loc["clear", "underfits"]


def test_finding_9_no_clear_effect_splits_into_equivalent_and_undecided():
    tiny = ([0.001, -0.001, 0.0, 0.002, -0.002], [0.01, -0.01, 0.0, 0.005, -0.004])
    wide = ([0.3, -0.3, 0.25, -0.28, 0.02], [1.0, -1.0, 0.0, 0.5, -0.4])
    out = _decide([tiny[0], wide[0]], [tiny[1], wide[1]], correction="bh")
    assert list(out["verdict"]) == [decide.EQUIVALENT, decide.UNDECIDED]
    assert out["tost_p_gap"][0] < ALPHA and out["tost_p_score"][0] < ALPHA


def test_finding_11_accuracy_deltas_are_points_in_the_table():
    runs = _runs({"shift": ([-0.1] * 5, [1.3, 1.1, 1.2, 1.4, 1.0])})
    row = summary.summary(runs, summary.options()).set_index("augmentation").loc["shift"]
    assert row["delta_test_score"] == pytest.approx(1.2) and row["score_unit"] == "points"
    assert row["score_step"] == pytest.approx(IMAGE) and row["margin"] == pytest.approx(0.1 * (100 - 97.0), abs=0.5)


def test_seeds_for_matches_the_textbook_sample_sizes():
    # One-sample (paired) t test, two-sided 5%, 80% power: d = 1 needs 10, d = 0.5 needs 34 (Cohen's tables).
    assert decide.seeds_for(1.0, 1.0, 0.05) == 10
    assert decide.seeds_for(0.5, 1.0, 0.05) == 34
    assert decide.seeds_for(-0.5, 1.0, 0.05) == 34  # the direction does not matter
    assert decide.seeds_for(0.01, 1.0, 0.05) == np.inf  # beyond 50 seeds
    assert np.isnan(decide.seeds_for(0.5, np.nan, 0.05))  # one seed: no spread to plan from


def test_gap_estimators_on_a_known_curve():
    train = np.full(10, 0.2)
    val = 0.2 + np.arange(1, 11) / 10  # gap = epoch / 10
    got = curves.gaps(train, val, best_epoch=4, best_gap=0.4, test_loss=0.7)
    assert got["best"] == 0.4 and got["test_loss"] == 0.7
    assert got["window"] == pytest.approx(np.mean([0.2, 0.3, 0.4, 0.5, 0.6]))  # epochs 2-6, centred on 4
    assert got["last5"] == pytest.approx(np.mean([0.6, 0.7, 0.8, 0.9, 1.0]))
    assert got["auc"] == pytest.approx(0.55)
    assert curves.gaps(train, val, 1, 0.1, 0.7)["window"] == pytest.approx(0.3)  # clipped at the start


def test_unfinished_best_at_the_end_or_still_improving_at_the_limit():
    falling = 1.0 / np.arange(1, 21)
    assert curves.unfinished(falling, best_epoch=20, epoch_limit=20, higher_is_better=False)
    # Early stopping ended it 10 epochs after the best: finished, whatever the last epochs did.
    noisy = np.r_[1.0 / np.arange(1, 11), 0.1 + 0.01 * np.arange(1, 11)]
    assert not curves.unfinished(noisy, best_epoch=10, epoch_limit=60, higher_is_better=False)
    # At the limit, best two epochs before the end, accuracy still climbing steadily.
    climbing = np.linspace(0.5, 0.95, 20)
    climbing[-1] = climbing[-3] - 0.001
    assert curves.unfinished(climbing, best_epoch=18, epoch_limit=20, higher_is_better=True)
    flat = 0.9 + 0.001 * np.sin(np.arange(20))
    assert not curves.unfinished(flat, best_epoch=8, epoch_limit=20, higher_is_better=True)


def test_noise_model_fit_recovers_a_known_spread():
    """Runs simulated with a known run noise: the fit finds it back."""
    rng = np.random.default_rng(5)
    rows = []
    for seed in range(8):
        shared = rng.normal(0, 1.0, size=2)  # the seed's effect, shared by all policies
        for policy in ["none", *[f"p{i}" for i in range(15)]]:
            gap, score = shared + rng.normal(0, [0.1, 2.0])
            rows.append({"augmentation": policy, "seed": seed, "gap": gap, "test_score": score})
    model = simulate.fit(pd.DataFrame(rows))
    assert model.sd_gap == pytest.approx(0.1, rel=0.2) and model.sd_score == pytest.approx(2.0, rel=0.2)
    assert abs(model.correlation) < 0.3


def test_finding_8_the_trend_test_allows_for_correlated_epochs():
    """Flat curves with correlated epoch-to-epoch noise (AR(1), r = 0.5): a plain regression test calls many of
    them still improving; the corrected test stays near its own level (10%)."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(2)
    plain, corrected = [], []
    for _ in range(2000):
        noise = np.zeros(10)
        for i in range(1, 10):
            noise[i] = 0.5 * noise[i - 1] + rng.normal(0, 0.01)
        fit = scipy_stats.linregress(np.arange(10), noise)
        plain.append(fit.slope > 0 and fit.pvalue / 2 < curves.TREND_P)
        corrected.append(curves.trend_p(noise) < curves.TREND_P)
    assert np.mean(plain) > 0.15
    assert np.mean(corrected) <= curves.TREND_P + 3 * np.sqrt(0.1 * 0.9 / 2000)
    assert curves.trend_p(np.linspace(0.5, 0.9, 10) + rng.normal(0, 0.005, 10)) < 0.01  # a real climb still counts


def test_a_row_with_one_seed_is_told_to_run_more_not_that_50_are_too_few():
    table = pd.DataFrame([{"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": "hflip",
                           "verdict": decide.UNDECIDED, "seeds_needed": np.nan, "n_seeds": 1, "max_seed": 0,
                           "unfinished": False, "underfits": False, "failed": "0/1", "epoch_limit": 60.0,
                           "score_metric": "accuracy", "delta_train_clean_score": 0.0}])
    lines = advice.lines(table, "digits_ablation")
    assert lines == ["open: hflip ran on too few seeds to measure seed noise; run at least 3 seeds to plan from"]
