"""The statistics of the decision (ablation/decide.py, curves.py) checked against independent computations, and
its calibration shown by simulating whole sweeps from a noise model fitted to real digits runs
(tests/data/noise_digits.json, written by scripts/decision_study.py fit)."""
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ablation import curves, decide, simulate

NOISE = Path(__file__).parent / "data" / "noise_digits.json"


def test_paired_equals_scipy_one_sample_t_row_by_row_with_missing_seeds():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 0.3, size=(6, 5))
    d[2, 4] = d[5, 0] = np.nan
    got = decide.paired(d)
    for row, out in enumerate(d):
        x = out[np.isfinite(out)]
        test = stats.ttest_1samp(x, 0.0)
        low, high = test.confidence_interval(0.95)
        assert got["n"][row] == len(x)
        assert got["mean"][row] == pytest.approx(x.mean(), abs=1e-12)
        assert got["sd"][row] == pytest.approx(x.std(ddof=1), abs=1e-12)
        assert (got["low"][row], got["high"][row]) == pytest.approx((low, high), abs=1e-12)
        assert got["p"][row] == pytest.approx(test.pvalue, rel=1e-9)
    one = decide.paired(np.array([[0.2, np.nan, np.nan]]))
    assert np.isnan(one["low"][0]) and np.isnan(one["p"][0])  # a single seed has no interval


def test_corrections_against_hand_computed_values():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1, made monotone.
    assert decide.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Benjamini-Hochberg: p * m / rank, made monotone from the top: 0.04*4/4, 0.03*4/3, 0.01*4/2, 0.005*4/1.
    assert decide.adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert decide.adjust(p, "none") == pytest.approx(p)
    with_missing = decide.adjust(np.array([0.01, np.nan, 0.02]), "holm")
    assert np.isnan(with_missing[1]) and with_missing[[0, 2]] == pytest.approx([0.02, 0.02])
    with pytest.raises(ValueError, match="report.correction: expected one of bh|holm|none, got 'bonf'"):
        decide.adjust(p, "bonf")


def _one(gap, score, margin=0.01):
    d_gap, d_score = np.array([gap]), np.array([score])
    return str(decide.decide(d_gap, d_score, "none", 0.05, margin)["verdict"][0])


@pytest.mark.parametrize("gap, score, expected", [
    ([-0.3, -0.31, -0.29, -0.3, -0.32], [0.002, 0.001, 0.003, 0.0, 0.002], decide.HELPS),
    ([0.01, -0.01, 0.0, 0.02, -0.02], [0.02, 0.025, 0.021, 0.03, 0.022], decide.HELPS),  # score up, gap unchanged
    ([-0.3, -0.31, -0.29, -0.3, -0.32], [0.03, -0.05, 0.02, -0.06, 0.01], decide.COST_UNCLEAR),
    ([0.3, -0.3, 0.25, -0.28, 0.02], [0.01, -0.01, 0.0, 0.005, -0.004], decide.NO_EFFECT),
    ([0.2, 0.22, 0.19, 0.21, 0.2], [0.001, -0.002, 0.0, 0.002, -0.001], decide.WIDENS),
    ([-0.1, -0.11, -0.09, -0.1, -0.12], [-0.17, -0.18, -0.16, -0.17, -0.175], decide.COSTS),
    ([0.01, -0.02, 0.03, -0.01, 0.0], [-0.04, -0.05, -0.045, -0.04, -0.05], decide.HURTS),
    ([0.2, 0.22, 0.19, 0.21, 0.2], [-0.04, -0.05, -0.045, -0.04, -0.05], decide.HURTS),  # wider and worse
])
def test_every_verdict_of_the_rule(gap, score, expected):
    assert _one(gap, score) == expected


def test_significantly_lower_score_is_never_recommended_whatever_the_gap():
    rng = np.random.default_rng(0)
    for _ in range(200):
        gap = rng.normal(rng.uniform(-1, 1), rng.uniform(0.001, 0.5), size=(1, 5))
        score = rng.normal(rng.uniform(-0.2, 0.05), rng.uniform(0.001, 0.05), size=(1, 5))
        out = decide.decide(gap, score, "none", 0.05, 0.01)
        if out["score"]["p"][0] < 0.05 and out["score"]["mean"][0] < 0:
            assert out["verdict"][0] in (decide.HURTS, decide.COSTS)
        if out["verdict"][0] == decide.HELPS:
            assert out["score"]["low"][0] > -0.01


def test_seeds_for_matches_the_textbook_sample_sizes():
    # One-sample (paired) t test, two-sided 5%, 80% power: d = 1 needs 10, d = 0.5 needs 34 (Cohen's tables).
    assert decide.seeds_for(1.0, 1.0, 0.05) == 10
    assert decide.seeds_for(0.5, 1.0, 0.05) == 34
    assert decide.seeds_for(-0.5, 1.0, 0.05) == 34  # the direction does not matter
    assert decide.seeds_for(0.01, 1.0, 0.05) == np.inf  # beyond 50 seeds
    assert np.isnan(decide.seeds_for(0.5, np.nan, 0.05))  # one seed: no spread to plan from


def test_next_level_steps_of_each_correction():
    adjusted = np.array([0.001, 0.2, 0.3, 0.5])  # one of four rejected
    assert decide.next_level(adjusted, 0.05, "holm") == pytest.approx(0.05 / 3)
    assert decide.next_level(adjusted, 0.05, "bh") == pytest.approx(0.05 * 2 / 4)
    assert decide.next_level(adjusted, 0.05, "none") == 0.05


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


@pytest.fixture(scope="module")
def noise():
    return simulate.NoiseModel.load(NOISE)


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("correction", ["bh", "holm"])
def test_no_true_effect_gives_verdicts_within_the_error_rate(noise, seeds, correction):
    """1,000 simulated sweeps of 20 policies with no true effect: the share of policies given any verdict but
    `no clear effect` stays within alpha (and so does the share of sweeps with any: the correction controls the
    whole sweep, not only each policy)."""
    result = simulate.false_verdicts(noise, 1000, 20, seeds, correction, alpha=0.05, seed=seeds)
    assert result["per_policy"] <= 0.05
    assert result["per_sweep"] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)


def test_without_correction_a_sweep_finds_effects_that_are_not_there(noise):
    result = simulate.false_verdicts(noise, 1000, 20, 5, "none", alpha=0.05, seed=1)
    assert result["per_policy"] > 0.05  # two endpoints at 5% each
    assert result["per_sweep"] > 0.5  # about one false verdict per sweep of 20


def test_power_grows_with_seeds_for_a_real_effect(noise):
    effect = {"effect_gap": -3 * noise.sd_gap, "effect_score": 3 * noise.sd_score}
    shares = [simulate.power(noise, **effect, n_sweeps=300, n_policies=20, n_seeds=n, correction="bh",
                             expected=decide.HELPS, seed=n) for n in (3, 5, 10)]
    assert shares[0] < shares[1] < shares[2] and shares[2] > 0.8


def test_noise_model_fit_recovers_a_known_spread():
    """Runs simulated with a known run noise: the fit finds it back."""
    import pandas as pd

    rng = np.random.default_rng(5)
    rows = []
    for seed in range(8):
        shared = rng.normal(0, 1.0, size=2)  # the seed's effect, shared by all policies
        for policy in ["none", *[f"p{i}" for i in range(15)]]:
            gap, score = shared + rng.normal(0, [0.1, 0.02])
            rows.append({"augmentation": policy, "seed": seed, "gap": gap, "test_score": score})
    model = simulate.fit(pd.DataFrame(rows))
    assert model.sd_gap == pytest.approx(0.1, rel=0.2) and model.sd_score == pytest.approx(0.02, rel=0.2)
    assert abs(model.correlation) < 0.3
