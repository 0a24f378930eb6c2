"""The sequential seed design (ablation/report/sequential.py): the planned looks and their alpha, what a look
stops, and the whole sequence simulated through the report's own rule from the digits noise model
(tests/data/noise_digits.json), its error rates asserted within the binomial tolerance of tests/test_decide.py."""
from pathlib import Path

import numpy as np
import pytest

from ablation.report import decide, sequential, simulate

NOISE = Path(__file__).parent / "data" / "noise_digits.json"
SWEEPS = 1000
ALPHA = 0.05
TOLERANCE = 3 * np.sqrt(ALPHA * (1 - ALPHA) / SWEEPS)
PLAN = sequential.schedule()
KWARGS = {"correction": "bh", "margin": 0.3, "gap_margin": 0.03}


@pytest.fixture(scope="module")
def noise():
    return simulate.NoiseModel.load(NOISE)


def test_the_planned_looks_and_their_alpha():
    assert sequential.looks() == (3, 5, 7, 10) == PLAN.seeds
    assert sequential.looks(step=1) == (3, 4, 5, 6, 7, 8, 9, 10)
    assert sequential.looks(step=3) == (3, 6, 10) and sequential.looks(3, 3) == (3,)
    with pytest.raises(ValueError, match="expected 2 <= start <= maximum"):
        sequential.looks(1, 10)
    for kind in sequential.SPENDING:
        alphas = sequential.spending((3, 5, 7, 10), ALPHA, kind)
        assert sum(alphas) == pytest.approx(ALPHA, abs=1e-15) and min(alphas) > 0
    # Pocock-type: alpha ln(1 + (e - 1) t) at t = 0.3; O'Brien-Fleming-type: 2 - 2 Phi(1.96 / sqrt(0.3)).
    assert sequential.spending((3, 5, 7, 10), ALPHA, "pocock")[0] == pytest.approx(0.05 * np.log(1 + 1.71828 * 0.3),
                                                                                      rel=1e-5)
    assert PLAN.alphas[0] == pytest.approx(3.46e-4, rel=0.01) and PLAN.alpha == pytest.approx(ALPHA)
    with pytest.raises(ValueError, match="expected one of obrien-fleming|pocock, got 'linear'"):
        sequential.spending((3, 10), ALPHA, "linear")


def _clear(rng, n=10):
    """A policy that clearly lowers the gap and raises the score, and one with nothing but noise."""
    gap = np.stack([-0.3 + rng.normal(0, 0.001, n), rng.normal(0, 0.02, n)])
    score = np.stack([5.0 + rng.normal(0, 0.01, n), rng.normal(0, 1.0, n)])
    return gap, score


def test_a_clear_effect_stops_at_the_first_look_and_no_effect_goes_on():
    gap, score = _clear(np.random.default_rng(0))
    first = sequential.look(gap, score, 0, PLAN, **KWARGS)
    assert list(first["verdict"]) == [decide.HELPS, decide.UNDECIDED] and first["alpha"] == PLAN.alphas[0]
    assert list(first["open"]) == [False, True] and list(first["reason"]) == [sequential.DECIDED, sequential.OPEN]
    out = sequential.run(gap, score, PLAN, **KWARGS)
    assert list(out["look"]) == [0, 3] and list(out["seeds"]) == [3, 10]
    assert list(out["reason"]) == [sequential.DECIDED, sequential.MAXIMUM]
    # The repeated confidence interval at 1 - alpha_k, wider than the raw 95% one.
    assert out["gap_rci_low"][0] < first["gap"]["low"][0] and out["gap_rci_high"][0] > first["gap"]["high"][0]


def test_a_stopped_row_is_never_decided_again():
    gap, score = _clear(np.random.default_rng(1))
    gap[0, 3:], score[0, 3:] = 0.5, -20.0  # what its later seeds would say, were they run: never looked at
    out = sequential.run(gap, score, PLAN, **KWARGS)
    assert out["verdict"][0] == decide.HELPS and out["look"][0] == 0 and out["seeds"][0] == 3
    assert out["gap_mean"][0] == pytest.approx(gap[0, :3].mean())
    # At a later look it is a placeholder that rejects nothing: the open row's verdict is as if it were absent.
    later = sequential.look(gap, score, 1, PLAN, active=[False, True], **KWARGS)
    assert later["gap_p_adjusted"][0] >= 0.5 and later["score_p_adjusted"][0] >= 0.5
    assert later["reason"][0] == ""


def test_the_open_rows_rejections_are_those_of_the_whole_family_or_fewer():
    """By the corrections' monotonicity: a look with stopped rows rejects a subset of what deciding every row at
    that look's seeds would."""
    rng = np.random.default_rng(2)
    gap = rng.normal(-0.01, 0.02, (300, 8, 10))
    score = rng.normal(0.3, 1.0, (300, 8, 10))
    active = rng.random((300, 8)) < 0.6
    part = sequential.look(gap, score, 2, PLAN, active, **KWARGS)
    whole = decide.decide(gap[..., :7], score[..., :7], alpha=PLAN.alphas[2], **KWARGS)
    for key in ("gap_p_adjusted", "score_p_adjusted"):
        rejected, everyone = part[key] < PLAN.alphas[2] / 2, whole[key] < PLAN.alphas[2] / 2
        assert not (rejected & active & ~everyone).any()
        assert (rejected & active).any()  # the check has something to compare


def test_the_baseline_runs_every_seed_any_row_runs(noise):
    mixed = simulate.Scenario(effect_gap=(-0.07,) * 3 + (0.0,) * 3, effect_score=(2.1,) * 3 + (-1.0,) * 2 + (0.0,))
    out = simulate.sequence(noise, 300, 6, PLAN, mixed, seed=4)
    assert (out["baseline_seeds"] == out["seeds"].max(axis=-1)).all()
    assert (out["runs"] == out["baseline_seeds"] + out["seeds"].sum(axis=-1)).all()
    assert set(np.unique(out["seeds"])) <= set(PLAN.seeds) and (out["seeds"] < 10).any()


def test_unfinished_training_and_failed_runs_stop_with_their_reason():
    rng = np.random.default_rng(3)
    gap, score = rng.normal(0, 0.02, (3, 10)), rng.normal(0, 1.0, (3, 10))
    gap[2, 1] = score[2, 1] = np.nan  # a missing seed counts as in decide
    failed, unfinished = np.zeros((3, 10), dtype=bool), np.zeros((3, 10), dtype=bool)
    failed[0, 4] = True  # shows at the second look (5 seeds)
    unfinished[1, [0, 2]] = True  # 2 of its first 3 runs
    out = sequential.run(gap, score, PLAN, failed=failed, unfinished=unfinished, **KWARGS)
    assert list(out["reason"]) == [sequential.FAILED, sequential.UNFINISHED, sequential.MAXIMUM]
    assert list(out["verdict"][:2]) == ["undecided: 1/5 runs failed", decide.UNFINISHED]
    assert list(out["seeds"]) == [5, 3, 10] and out["runs"] == 10 + 18
    last = sequential.look(gap, score, 3, PLAN, **KWARGS)
    assert last["gap"]["n"][2] == 9 and last["verdict"][2] == out["verdict"][2]


def test_no_true_effect_gives_any_effect_verdict_in_at_most_alpha_of_sweeps(noise):
    """20 policies with no effect, every look at its own alpha: the share of sweeps with any effect verdict stays
    within alpha over the whole sequence, and is not vacuously far below it."""
    rates = simulate.sequential_rates(noise, SWEEPS, 20, PLAN, simulate.Scenario(), "bh", seed=10)
    assert 0.4 * ALPHA <= rates["sweeps_effect"] <= ALPHA + TOLERANCE
    assert rates["sweeps_equivalent"] == 0


def test_good_policies_are_not_called_harmful(noise):
    """22 policies that lower the gap and leave the score alone."""
    rates = simulate.sequential_rates(noise, SWEEPS, 22, PLAN, simulate.Scenario(effect_gap=-3 * noise.sd_gap),
                                      "bh", seed=11)
    assert rates["sweeps_harm"] <= ALPHA + TOLERANCE
    assert rates["sweeps_effect"] <= ALPHA + TOLERANCE


def test_the_mixed_sweep_runs_fewer_runs_than_the_fixed_10_seed_design(noise):
    """5 shift-like, 5 that cost a point, 10 without effect: fewer runs than 21 x 10, errors within their bounds,
    and the shift-like policies still found."""
    scenario = simulate.Scenario(effect_gap=(-0.07,) * 5 + (0.0,) * 15,
                                 effect_score=(2.1,) * 5 + (-1.0,) * 5 + (0.0,) * 10)
    rates = simulate.sequential_rates(noise, SWEEPS, 20, PLAN, scenario, "bh", seed=12)
    fixed = simulate.rates(noise, 10, 20, 10, scenario, "bh", seed=12)
    assert rates["runs"] < fixed["runs"] == 210 and rates["seeds_per_policy"] < 10
    assert rates["sweeps_harm"] <= ALPHA + TOLERANCE and rates["sweeps_helps"] <= ALPHA + TOLERANCE
    assert rates[decide.HELPS] > 0.15  # of all 20 policies: most of the 5 shift-like ones
