"""Dose and response: a policy's magnitudes scaled by augmentation.strength, sweep.design=strength's jobs, and the
report's strength levels (table, lines, plot), down to a real sweep that writes strength.png."""
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from scipy import stats

from ablation import augment
from ablation.augment import strength
from ablation.report import figures as plots
from ablation.report import strength_levels
from ablation.sweep import designs
from ablation.training.config import ConfigError
from conftest import CONF
from helpers import parents_and_children, run_sweep, runs, store_uri


def rotate(limit=30, **extra):
    return {"name": "rotate", "transforms": [{"_target_": "albumentations.Rotate", "limit": limit, "p": 1.0}], **extra}


def scaled(cfg, s):
    return strength.scale(cfg, cfg["name"], s)[0]


def test_each_rule_scales_its_magnitudes():
    assert scaled(rotate(), 0.5)["transforms"][0]["limit"] == 15
    assert scaled(rotate([-10, 20]), 2)["transforms"][0]["limit"] == [-20, 40]
    shift = {"name": "shift", "idg": {"width_shift_range": 0.15, "zoom_range": [0.8, 1.25], "fill_mode": "nearest"}}
    idg = scaled(shift, 2)["idg"]
    assert idg["width_shift_range"] == pytest.approx(0.3) and idg["fill_mode"] == "nearest"
    assert idg["zoom_range"] == pytest.approx([0.64, 1.5625])  # a factor range: raised to the power
    noise = {"name": "n", "transforms": [{"_target_": "albumentations.GaussNoise", "std_range": [0.02, 0.08]}]}
    assert scaled(noise, 0.5)["transforms"][0]["std_range"] == pytest.approx([0.01, 0.04])
    flip = {"name": "f", "transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]}
    assert scaled(flip, 0.5)["transforms"][0]["p"] == 0.25 and scaled(flip, 4)["transforms"][0]["p"] == 1.0
    crop = {"name": "c", "transforms": [{"_target_": "albumentations.RandomResizedCrop", "size": [8, 8],
                                         "scale": [0.25, 1.0]}]}
    assert scaled(crop, 0.5)["transforms"][0]["scale"] == pytest.approx([0.5, 1.0])
    jitter = {"name": "j", "transforms": [{"_target_": "albumentations.ColorJitter", "brightness": 0.2,
                                           "contrast": [0.5, 2.0], "saturation": 0.0, "hue": 0.1}]}
    out = scaled(jitter, 2)["transforms"][0]
    assert out["brightness"] == pytest.approx(0.4) and out["contrast"] == pytest.approx([0.25, 4.0])
    assert out["hue"] == pytest.approx(0.2)
    mixup = {"name": "m", "transforms": [], "mix": {"kind": "mixup", "alpha": 0.2}}
    assert scaled(mixup, 2)["mix"]["alpha"] == pytest.approx(0.4)
    # Nested containers scale their children; a magnitude left at its default scales from albumentations' own.
    nested = {"name": "o", "transforms": [{"_target_": "albumentations.OneOf", "transforms": [
        {"_target_": "albumentations.Rotate"}, {"_target_": "albumentations.VerticalFlip", "p": 0.5}]}]}
    children = scaled(nested, 0.5)["transforms"][0]["transforms"]
    assert children[0]["limit"] == [-45, 45] and children[1]["p"] == 0.25


def test_levels_are_combinations_of_their_own():
    prints = {s: augment.build(rotate(strength=s)).fingerprint for s in (0, 0.5, 1, 2)}
    assert len(set(prints.values())) == 4 and augment.build(rotate()).fingerprint not in prints.values()
    assert augment.build(rotate(strength=0.5)).name == "rotate@0.5"
    zero = augment.build(rotate(strength=0))
    assert zero.is_identity and zero.name == "rotate@0"
    # Strength 0 leaves no transform, yet each policy's level 0 is still its own combination.
    other = augment.build({"name": "shift", "idg": {"width_shift_range": 0.1}, "strength": 0})
    assert other.is_identity and other.fingerprint != zero.fingerprint


def test_more_strength_changes_images_more():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 24, 24, 1), dtype=np.uint8)
    change = {}
    for s in (0.25, 1, 4):
        policy = augment.build(rotate(strength=s, transforms=[
            {"_target_": "albumentations.Rotate", "limit": 30, "p": 1.0, "border_mode": 4}]),
            image_shape=(24, 24, 1))
        out = policy.augment_batch(images, np.random.default_rng(1))
        change[s] = np.abs(out.astype(float) - images).mean()
    assert change[0.25] < change[1] < change[4]


def test_what_cannot_be_dosed_is_refused_by_name():
    clahe = {"name": "clahe", "transforms": [{"_target_": "albumentations.Rotate", "limit": 10},
                                             {"_target_": "albumentations.CLAHE"}], "strength": 0.5}
    with pytest.raises(augment.PolicyError, match=r"^augmentation\.transforms\[1\]: albumentations\.CLAHE has no "
                                                  r"magnitude"):
        augment.build(clahe)
    flips = {"name": "idg", "idg": {"rotation_range": 10, "horizontal_flip": True}, "strength": 2}
    with pytest.raises(augment.PolicyError, match=r"^augmentation\.idg\.horizontal_flip: has no magnitude"):
        augment.build(flips)
    wide = {"name": "shift", "idg": {"width_shift_range": 0.6}, "strength": 2}
    with pytest.raises(augment.PolicyError, match=r"^augmentation\.idg\.width_shift_range: 0\.6 at strength 2 is "
                                                  r"1\.2, past its largest"):
        augment.build(wide)
    with pytest.raises(augment.PolicyError, match=r"^augmentation\.strength: expected a number >= 0"):
        augment.build(rotate(strength=-1))
    # Scaled values still pass the transform's own checks, and say which level broke them.
    with pytest.raises(augment.PolicyError, match=r"augmentation\.strength=3\)$"):
        augment.build({"name": "z", "transforms": [
            {"_target_": "albumentations.ShiftScaleRotate", "scale_limit": 0.5}], "strength": 3})


def test_device_layers_use_the_scaled_magnitudes():
    from ablation.augment import device

    layers = device.layers_for(rotate(strength=0.5, placement="device"), (16, 16, 1), seed=0)
    rotation = next(layer for layer in layers.layers if "rotation" in type(layer).__name__.lower())
    assert np.allclose(rotation.factor, (-15 / 360, 15 / 360))
    assert device.layers_for(rotate(strength=0, placement="device"), (16, 16, 1), seed=0) is None


def test_the_strength_design_expands_to_none_and_each_level():
    defaults = OmegaConf.create({"sweep": {"design": "grid", "levels": [0, 0.5, 1, 2]}, "augmentation": {"name": "none"}})
    jobs = designs.jobs_of([["augmentation=rotate", "sweep.design=strength", "seed=0"]], defaults)
    assert jobs == [["seed=0", "augmentation=none"],
                    *[["seed=0", "augmentation=rotate", f"++augmentation.strength={s}"] for s in ("0.5", "1", "2")]]
    # A swept sweep.levels=0.5,3 gives one level per job; the baseline runs once, and a none job joins it.
    swept = designs.jobs_of([["augmentation=none", "sweep.design=strength", "sweep.levels=0.5"],
                          ["augmentation=rotate", "sweep.design=strength", "sweep.levels=0.5"],
                          ["augmentation=rotate", "sweep.design=strength", "sweep.levels=3"]], defaults)
    assert swept == [["augmentation=none"], ["augmentation=rotate", "++augmentation.strength=0.5"],
                     ["augmentation=rotate", "++augmentation.strength=3"]]
    listed = designs.jobs_of([["augmentation=hflip", "sweep.design=strength", "sweep.levels=[0.25,4]"]], defaults)
    assert [j[-1] for j in listed[1:]] == ["++augmentation.strength=0.25", "++augmentation.strength=4"]
    with pytest.raises(ConfigError, match=r"^sweep\.levels: expected levels >= 0"):
        designs.jobs_of([["augmentation=rotate", "sweep.design=strength", "sweep.levels=-1"]], defaults)
    with pytest.raises(ConfigError, match=r"^sweep\.levels: the levels of sweep\.design=strength"):
        designs.jobs_of([["augmentation=rotate", "sweep.levels=2"]], defaults)


def summary_rows(width=1.0):
    """A report table of rotate at four levels, delta test accuracy in points: rises to 1, falls after."""
    def row(augmentation, verdict, score, gap, width=width):
        return {"dataset": "digits", "model": "small_cnn", "setting": "", "augmentation": augmentation,
                "verdict": verdict, "delta_test_score": score, "delta_test_score_ci_low": score - width,
                "delta_test_score_ci_high": score + width, "delta_gap": gap, "delta_gap_ci_low": gap - width / 100,
                "delta_gap_ci_high": gap + width / 100, "n_seeds": 5, "score_metric": "accuracy",
                "score_step": 100 / 360, "gap_estimator": "auc"}
    return pd.DataFrame([row("none", "baseline", 0.0, 0.0, 0.0), row("rotate@0.5", "helps", 1.0, -0.05),
                         row("rotate@1", "helps", 2.0, -0.08), row("rotate@2", "undecided", 0.0, -0.1),
                         row("rotate@6", "hurts", -6.0, -0.12), row("hflip", "hurts", -1.0, 0.0)])


def level_runs(images_ahead, n_test=360):
    """Finished runs of none, rotate@0.5 and rotate@1, one per seed: rotate@1 gets images_ahead[seed] more of the
    n_test test images right than rotate@0.5 (both ahead of none)."""
    rows = []
    for seed, ahead in enumerate(images_ahead):
        base = 300 + 3 * seed  # seeds differ far more than the levels do: pairing cancels it
        for augmentation, correct in (("none", base), ("rotate@0.5", base + 4), ("rotate@1", base + 4 + ahead)):
            rows.append({"dataset": "digits", "model": "small_cnn", "setting": None, "augmentation": augmentation,
                         "seed": str(seed), "metrics.test/accuracy": correct / n_test, "metrics.data/n_test": n_test})
    return pd.DataFrame(rows)


def test_levels_that_seed_noise_cannot_order_are_named_together(tmp_path):
    """Without runs, the levels whose intervals reach the best's; with runs, those a paired test does not show
    worse. The line names the set and the best point estimate, then what the levels above the set do."""
    doses = strength_levels.levels(summary_rows())
    assert list(doses["strength"]) == [0, 0.5, 1, 2, 6] and set(doses["policy"]) == {"rotate"}
    assert doses.loc[doses["best"], "strength"].tolist() == [1]
    assert doses.loc[doses["supported"], "strength"].tolist() == [0.5, 1]  # [0, 2] reaches [1, 3]
    [line] = strength_levels.lines(doses)
    assert line == ("rotate: levels 0.5 and 1 help and cannot be told apart (best point estimate 1: +2.0 points "
                    "[+1.0, +3.0]); above: 2 +0.0 points [-1.0, +1.0] (undecided), 6 -6.0 points [-7.0, -5.0] "
                    "(hurts)")
    narrow = strength_levels.levels(summary_rows(width=0.4))  # [0.6, 1.4] does not reach [1.6, 2.4]
    assert narrow.loc[narrow["supported"], "strength"].tolist() == [1]
    assert strength_levels.lines(narrow)[0].startswith("rotate: best supported level 1: +2.0 points [+1.6, +2.4]; 0.5 also "
                                            "helps but less, by their intervals; above: 2 ")
    nothing = summary_rows().replace({"helps": "undecided"})
    assert strength_levels.lines(strength_levels.levels(nothing))[0].startswith("rotate: no level helps by the decision rule")
    assert strength_levels.levels(summary_rows()[lambda t: ~t["augmentation"].str.contains("@")]).empty
    plots.strength_response(doses).savefig(tmp_path / "strength.png")
    assert (tmp_path / "strength.png").stat().st_size > 10_000


@pytest.mark.parametrize("ahead,both", [
    ([1, -2, 3, 0, 2], True),  # 0.8 images ahead on average, the seeds disagree: indistinguishable
    ([1, 1, 1], True),  # one image ahead at each of 3 seeds: no spread, but one image is the floor (p = 0.23)
    ([4, 6, 3, 7, 5], False),  # ahead at every seed by 3-7 images: clearly better
])
def test_the_paired_test_over_seeds_decides_which_levels_go_with_the_best(ahead, both):
    doses = strength_levels.levels(summary_rows(width=0.4), level_runs(ahead))  # the intervals alone would split them
    assert doses.loc[doses["best"], "strength"].tolist() == [1]
    assert doses.loc[doses["supported"], "strength"].tolist() == ([0.5, 1] if both else [1])
    d, step = np.array(ahead) / 360 * 100, 100 / 360  # points; the spread is floored at one test image
    t = d.mean() / (max(d.std(ddof=1), step) / np.sqrt(len(d)))
    p = doses.set_index("strength").loc[0.5, "p_vs_best"]
    assert p == pytest.approx(2 * stats.t.sf(t, len(d) - 1)) and (p >= 0.05) == both
    [line] = strength_levels.lines(doses)
    assert line.startswith("rotate: levels 0.5 and 1 help and cannot be told apart (best point estimate 1: "
                           if both else "rotate: best supported level 1: +2.0 points [+1.6, +2.4]; 0.5 also helps "
                           "but less, by a paired test")


@pytest.mark.slow
def test_a_quick_strength_sweep_writes_the_strength_plot(tmp_path):
    result = run_sweep(tmp_path, "experiment=quick", "sweep.design=strength", "sweep.levels=0.5,2", "lenses.corruptions=[]",
                       "tracking.log_model=false", "experiment_name=dose")
    assert result.returncode == 0, result.stderr[-3000:]
    parents, children = parents_and_children(runs(store_uri(tmp_path), "dose"))
    names = sorted(r.data.tags["augmentation"] for r in children)
    assert names == sorted(["none", "hflip@0.5", "hflip@2"] * 2)  # none once per seed, not once per level
    assert len({r.data.tags["policy_fingerprint"] for r in children}) == 3
    report = tmp_path / "reports" / "dose"
    levels = pd.read_csv(report / "strength.csv")
    assert levels["strength"].tolist() == [0, 0.5, 2] and levels["augmentation"].tolist()[0] == "none"
    assert (report / "strength.png").stat().st_size > 10_000
    page = (report / "report.html").read_text()
    assert "<h2>Dose and response</h2>" in page and "src='strength.png'" in page
    assert page.index("<h2>Dose and response</h2>") < page.index("<h2>What to do next</h2>")  # the sweep's answer
    assert "hflip: " in (report / "summary.md").read_text().split("## Dose and response")[1]
    logged = {a.path for a in MlflowClient(store_uri(tmp_path)).list_artifacts(parents[0].info.run_id, "dose")}
    assert "dose/strength.png" in logged


def test_every_shipped_policy_with_magnitudes_scales():
    """Each packaged policy either builds at every level of the default design, or is refused by name."""
    import yaml

    refused = {}
    for path in sorted((CONF / "augmentation").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        for s in (0.25, 0.5, 1, 2):
            try:
                augment.build({**cfg, "strength": s}, image_shape=(32, 32, 3))
            except augment.PolicyError as exc:
                refused[path.stem] = str(exc)
                break
    assert set(refused) == {"clahe", "albu_mixed", "idg_classic"}, refused
    assert all("has no magnitude" in message for message in refused.values())
