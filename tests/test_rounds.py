"""Seeds on demand (sweep.seeds=auto) in the report's table and the sweeper's rounds: each row decided at the look it
stopped at, rows still open while their seeds have not run, the next round's jobs, and a real sequential sweep."""
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from test_decide import _runs

from ablation.report import advice, decide, sequential, summary
from ablation.report.view import decision_view
from ablation.sweep.rounds import Rounds
from conftest import compose_config
from helpers import parents_and_children, run_sweep, runs, store_uri

# Looks at 3, 5, 7 and 10 seeds; Pocock-type spending, whose first look can decide a clear effect on 3 seeds (the
# default, O'Brien-Fleming-type, keeps the first looks strict: test_the_default_spending_keeps_the_first_look_strict).
SCHEDULE = sequential.schedule(3, 10, 2, kind="pocock")
GOOD = ([-0.1, -0.11, -0.09, -0.1, -0.12] * 2, [5.0, 5.1, 4.9, 5.05, 4.95] * 2)  # clearly better, every seed
NOISE = (list(np.random.default_rng(5).normal(0, 0.05, 10)), list(np.random.default_rng(6).normal(0, 1.0, 10)))


def _table(seeds_of: dict[str, int], schedule=SCHEDULE, made=None) -> pd.DataFrame:
    """The report's table of a sequential sweep whose policies have run the given numbers of seeds (after `made`
    looks, for a sweep between its rounds)."""
    rows = _runs({"good": GOOD, "noise": NOISE}, seeds=10)
    rows = rows[[seed < seeds_of[policy] for policy, seed in zip(rows["augmentation"], rows["seed"])]]
    opts = {**summary.options(), "sequential": schedule, "looks_made": made}
    return summary.summary(rows, opts).set_index("augmentation")


def test_a_clear_effect_stops_at_the_first_look_and_noise_runs_to_the_maximum():
    table = _table({"none": 10, "good": 10, "noise": 10})
    good, noise = table.loc["good"], table.loc["noise"]
    # Decided on its first 3 seeds at the first look's alpha, though 10 are in the store: the sequence decides.
    assert (good["verdict"], good["stopped"], good["look"], good["n_seeds"]) == (decide.HELPS, sequential.DECIDED, 1, 3)
    assert good["alpha_look"] == pytest.approx(SCHEDULE.alphas[0])
    assert noise["stopped"] == sequential.MAXIMUM and noise["look"] == 4 and noise["n_seeds"] == 10
    assert noise["verdict"] in (decide.UNDECIDED, decide.EQUIVALENT, decide.COST_UNCLEAR)
    # The intervals shown are those of the look it stopped at (level 1 - alpha_k): wider than the raw 95% ones.
    fixed = summary.summary(_runs({"good": GOOD, "noise": NOISE}, seeds=3), summary.options()).set_index("augmentation")
    assert good["delta_test_score_rci_low"] < fixed.loc["good", "delta_test_score_ci_low"]
    assert good["delta_test_score_rci_high"] > fixed.loc["good", "delta_test_score_ci_high"]
    assert good["delta_test_score_ci_low"] == pytest.approx(fixed.loc["good", "delta_test_score_ci_low"])  # raw, kept


def test_the_default_spending_keeps_the_first_look_strict():
    strict = sequential.schedule(3, 10, 2)
    assert strict.kind == "obrien-fleming" and strict.alphas[0] < SCHEDULE.alphas[0] / 10
    table = _table({"none": 10, "good": 10, "noise": 10}, strict)
    assert table.loc["good", "verdict"] == decide.HELPS and table.loc["good", "look"] > 1
    assert table.loc["good", "alpha_look"] == pytest.approx(strict.alphas[int(table.loc["good", "look"]) - 1])


def test_between_rounds_a_row_stays_open_until_its_next_looks_seeds_have_run():
    after_first = _table({"none": 3, "good": 3, "noise": 3})
    assert after_first.loc["good", "stopped"] == sequential.DECIDED
    assert after_first.loc["noise", "stopped"] == sequential.OPEN and after_first.loc["noise", "look"] == 1
    # What to do: run the same sweep again; the view shows each row's look and the interval valid at it.
    [todo] = advice.lines(after_first.reset_index(), "digits_ablation")
    assert todo.startswith("open: noise go on to the next look") and todo.endswith("sweep.seeds=auto")
    view = decision_view(after_first.reset_index()).set_index("augmentation")
    assert view.loc["good", "look"] == "1/4" and view.loc["noise", "stopped"] == sequential.OPEN
    shown = next(c for c in view.columns if c.startswith("delta test accuracy"))
    assert shown.endswith("[CI at its look]")
    low = after_first.loc["good", "delta_test_score_rci_low"]
    assert f"{low:+.2f}" in view.loc["good", shown]
    # The second round ran noise and none to 5 seeds; good stays what its first look said.
    after_second = _table({"none": 5, "good": 3, "noise": 5})
    assert after_second.loc["noise", "look"] == 2 and after_second.loc["noise", "n_seeds"] == 5
    assert after_second.loc["good", ["verdict", "look", "n_seeds"]].tolist() == [decide.HELPS, 1, 3]
    assert after_second.loc["none", "n_seeds"] == 5
    # A sweep after its first round whose store holds every seed (an earlier fixed sweep): it has made one look.
    reused = _table({"none": 10, "good": 10, "noise": 10}, made=1)
    assert reused.loc["noise", ["stopped", "look", "n_seeds"]].tolist() == [sequential.OPEN, 1, 3]
    # Fewer seeds than the first look: nothing is decided yet.
    early = _table({"none": 2, "good": 2, "noise": 2})
    assert set(early.drop(index="none")["verdict"]) == {decide.UNDECIDED}


def test_a_round_continues_only_the_open_policies_with_their_baseline():
    jobs = [[f"augmentation={a}", f"seed={s}"] for a in ("none", "good", "noise") for s in range(10)]
    keys = [f"{job[0]}-{job[1]}" for job in jobs]
    cfg = compose_config("sweep.seeds=auto")
    rounds = Rounds.of(cfg, jobs, keys)
    assert rounds.schedule.seeds == (3, 5, 7, 10)
    assert sorted(rounds.batch()) == sorted(j for j in jobs if int(j[1][5:]) < 3)
    table = _table({"none": 3, "good": 3, "noise": 3}).reset_index()
    finished = pd.DataFrame({"dataset": "digits", "model": "small_cnn", "setting": "",
                             "augmentation": [j[0].split("=")[1] for j in jobs], "tags.config_hash": keys})
    assert rounds.decide(table, finished)
    assert sorted(rounds.batch()) == sorted(j for j in jobs if j[0] != "augmentation=good" and 3 <= int(j[1][5:]) < 5)
    assert rounds.line().startswith("look 1/4 at 3 seeds") and "noise" in rounds.line().split("go on")[1]
    assert rounds.plan_line().startswith("seeds on demand: looks at 3 (alpha 0.0003), 5 (alpha 0.0052)")
    assert rounds.plan_line().endswith("(at most 30 runs)")


@pytest.mark.parametrize("overrides, message", [
    (["sweep.seeds=sometimes"], "sweep.seeds: expected fixed or auto"),
    (["sweep.seeds=auto", "sweep.sequential.start=5"], "sweep.sequential.start: the first round runs 5 seeds, but the sweep lists 4"),
    (["sweep.seeds=auto", "sweep.sequential.start=1"], "sweep.sequential.start: expected an integer >= 2"),
    (["sweep.seeds=auto", "sweep.sequential.step=two"], "sweep.sequential.step: expected an integer, got .two."),
    (["sweep.seeds=auto", "sweep.sequential.spending=linear"], "sweep.sequential.spending: expected one of"),
])
def test_seeds_on_demand_that_cannot_be_planned_name_the_key(overrides, message):
    from ablation.core.errors import ConfigError
    from ablation.sweep import rounds as sweep_rounds

    jobs = [["augmentation=none", f"seed={s}"] for s in range(4)]
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=f"^{message}"):
        sweep_rounds.auto(cfg) and Rounds.of(cfg, jobs, [str(s) for s in range(4)])


# A learning rate too small to move the weights: each seed's model is its initialisation whatever the policy, so
# hflip's runs equal none's (no effect, exactly) and training stops at once, finished (val_accuracy never improves).
FROZEN = ("experiment=quick", "sweep.seeds=auto", "seed=range(4)", "sweep.sequential.start=2",
          "sweep.sequential.step=1", "trainer.monitor=val_accuracy", "trainer.learning_rate=1e-12")


def _looks(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("look ")]


@pytest.mark.slow
def test_a_sequential_sweep_continues_the_open_policy_and_resumes_after_kill_9_between_rounds(tmp_path):
    import os
    import signal
    import subprocess

    from conftest import ROOT
    from helpers import sweep_command, wait_for

    # Under joblib (each round's jobs two at a time), killed without warning once the first look has been made.
    process = subprocess.Popen(sweep_command(tmp_path, *FROZEN, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                             name="killed"),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    seen = []
    try:
        def first_look() -> bool:
            line = process.stdout.readline()
            assert line or process.poll() is None, "the sweep ended before its first look"
            seen.append(line)
            return line.startswith("look 1/")
        wait_for(first_look, 300, "the sweep's first look", interval=0)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert seen[-1].startswith("look 1/3 at 2 seeds") and "1 go on to 3 seeds: hflip (undecided)" in seen[-1], seen[-1]

    # The same sweep again, packed (two workers that take job after job): the first round is in the store, the
    # look is the same, and the sweep goes on to its end.
    again = run_sweep(tmp_path, *FROZEN, "hydra/launcher=packed", "hydra.launcher.n_jobs=2", name="again")
    assert again.returncode == 0, again.stderr[-3000:]
    looks = _looks(again.stdout)
    assert looks[0] == seen[-1].rstrip("\n")
    assert looks[1].startswith("look 2/3 at 3 seeds") and "decided: hflip equivalent; done" in looks[1], looks
    assert again.stdout.count("skip ") >= 4  # none and hflip at seeds 0 and 1 ran before the kill
    _, children = parents_and_children(runs(store_uri(tmp_path), "quick"))
    finished = sorted(r.info.run_name for r in children if r.info.status == "FINISHED")
    assert finished == [f"{a}/small_cnn/s{s}" for a in ("hflip", "none") for s in range(3)]  # seed 3 never ran
    # The parent run records every look; the report decides hflip as the second look did.
    parent = next(r for r in runs(store_uri(tmp_path), "quick")
                  if r.data.tags.get("sweep") == "parent" and r.info.status == "FINISHED")
    client = MlflowClient(store_uri(tmp_path))
    recorded = json.loads(open(client.download_artifacts(parent.info.run_id, "sequential/rounds.json",
                                                         str(tmp_path))).read())
    assert [(r["seeds"], r["rows"]["hflip"]["stopped"]) for r in recorded] == [(2, sequential.OPEN),
                                                                                 (3, sequential.DECIDED)]
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "sequential/seeds")] == [2, 3]
    table = pd.read_csv(tmp_path / "reports" / "quick" / "summary.csv").set_index("augmentation")
    assert table.loc["hflip", ["verdict", "look", "n_seeds"]].tolist() == [decide.EQUIVALENT, 2, 3]


def test_the_reports_looks_and_the_simulations_sequence_decide_alike():
    """The simulation (sequential.run over arrays) and the report's table (summary over per-run rows) run the same
    looks: every row stops at the same look with the same verdict and interval, on policies that decide early,
    late and never."""
    rng = np.random.default_rng(11)
    effects = {"good": GOOD, "noise": NOISE,
               "late": (list(-0.03 + rng.normal(0, 0.02, 10)), list(0.8 + rng.normal(0, 0.6, 10))),
               "bad": (list(rng.normal(0, 0.02, 10)), list(-3 + rng.normal(0, 0.5, 10)))}
    for schedule in (SCHEDULE, sequential.schedule(3, 10, 2)):
        rows = _runs(effects, seeds=10)
        table = summary.summary(rows, {**summary.options(), "sequential": schedule}).set_index("augmentation")
        base = rows[rows["augmentation"] == "none"].set_index("seed")
        names = sorted(effects)
        d = {c: np.array([rows[rows["augmentation"] == a].set_index("seed")[c] - base[c] for a in names])
             for c in ("gap", "test_score")}
        margin, _ = summary.margins("accuracy", base, summary.options())
        gap_margin = summary.options()["margin"]["gap"] * abs(base["gap"].mean())
        simulated = sequential.run(d["gap"], d["test_score"], schedule, correction="bh", margin=margin,
                                   score_floor=100 / 360, gap_margin=gap_margin)
        for i, name in enumerate(names):
            row = table.loc[name]
            assert (row["verdict"], row["look"] - 1, row["n_seeds"]) == (
                simulated["verdict"][i], simulated["look"][i], simulated["seeds"][i]), (schedule.kind, name)
            assert row["delta_test_score_rci_low"] == pytest.approx(simulated["score_rci_low"][i])
        assert len(set(table.drop(index="none")["look"])) > 1  # rows stopped at different looks


def test_the_forest_plot_of_a_sequential_sweep_draws_each_rows_interval_at_its_look():
    from ablation.report import figures

    table = _table({"none": 10, "good": 10, "noise": 10}).reset_index()
    fig = figures.forest(table)
    assert fig.get_suptitle() == "policy - none, paired by seed, with intervals at the look each policy stopped at"
    score_ax = fig.axes[0]
    drawn = sorted(tuple(np.round(segment[:, 0], 6)) for segment in score_ax.collections[0].get_segments())
    rows = table[table["augmentation"] != "none"]
    wanted = sorted(tuple(np.round(pair, 6)) for pair in zip(rows["delta_test_score_rci_low"],
                                                          rows["delta_test_score_rci_high"]))
    assert drawn == wanted


@pytest.mark.slow
def test_a_sequential_sweep_under_submitit_sends_each_round_as_one_batch(tmp_path):
    """submitit (a process per job, as SLURM's jobs are): the first round's four jobs go out and train at once, the
    look decides, and only the open policy's next seed goes out with its `none`, after the first round."""
    result = run_sweep(tmp_path, *FROZEN, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                       timeout=500)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    looks = _looks(result.stdout)
    assert looks[0].startswith("look 1/3 at 2 seeds") and "1 go on to 3 seeds: hflip (undecided)" in looks[0], looks
    assert looks[1].startswith("look 2/3 at 3 seeds") and "decided: hflip equivalent; done" in looks[1], looks
    _, children = parents_and_children(runs(store_uri(tmp_path), "quick"))
    assert sorted(r.info.run_name for r in children if r.info.status == "FINISHED") == [
        f"{a}/small_cnn/s{s}" for a in ("hflip", "none") for s in range(3)]
    assert len({r.data.tags["pid"] for r in children}) == 6  # a process per job
    # The first round's jobs trained at once; the second round's started after every one of them had ended.
    first = [r for r in children if r.data.tags["seed"] in ("0", "1")]
    second = [r for r in children if r.data.tags["seed"] == "2"]
    assert max(r.info.start_time for r in first) < min(r.info.end_time for r in first)
    assert min(r.info.start_time for r in second) > max(r.info.end_time for r in first)
    assert len(list((tmp_path / "sweep" / ".submitit").rglob("*_result.pkl"))) == 6
