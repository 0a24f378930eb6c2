"""Affinity and diversity (ablation.lenses.affinity) on runs whose answer is known: a policy that changes nothing sits at
(1, 1) with none, and one that blanks every image has the accuracy of a constant guess."""
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from ablation import datasets
from ablation.lenses import affinity
from ablation.report import build as report
from ablation.training.run import run

# Brightness and contrast both at -100%: every image becomes all zeros.
BLANK = {"name": "blank", "transforms": [{"_target_": "albumentations.RandomBrightnessContrast",
                                          "brightness_limit": [-1, -1], "contrast_limit": [-1, -1], "p": 1.0}]}
# Changes nothing, yet is a combination of its own (a policy's identity is its content, and `none` has none).
IDENTITY = {"name": "identity", "transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 0.0}]}
# Mirrors every image: images the none model still tells apart, each one known without the policy's code.
MIRROR = {"name": "mirror", "transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 1.0}]}


def _train(make_cfg, policy) -> str:
    cfg = make_cfg("experiment_name=affinity", "tracking.log_model=true", lean=False)
    if policy is not None:
        with open_dict(cfg):
            cfg.augmentation.name = policy["name"]
            cfg.augmentation.transforms = policy["transforms"]
    return run(cfg)["run_id"]


def test_identity_is_at_one_one_blanking_scores_a_constant_guess_and_the_report_shows_both(make_cfg, tmp_path):
    ids = {name: _train(make_cfg, policy) for name, policy in (("none", None), ("identity", IDENTITY),
                                                               ("blank", BLANK), ("mirror", MIRROR))}
    assert len(set(ids.values())) == 4  # four trained runs, none skipped as a combination seen before
    cfg = make_cfg("experiment_name=affinity", lean=False)
    finished, _, _ = report.runs_of(cfg)
    measures = affinity.of_runs(cfg, finished).set_index("run_id")
    assert measures.loc[ids["none"]].tolist() == [1.0, 1.0]
    assert measures.loc[ids["identity"], "affinity"] == 1.0  # the same images: the same predictions
    # Trained alike from the same seed on the same images: the same final training loss.
    assert measures.loc[ids["identity"], "diversity"] == pytest.approx(1.0, abs=1e-3)
    # Every blanked image is the same image, so the none model gives one answer for all of them: its accuracy is
    # the share of that class in the validation split, at most the largest class share.
    val = datasets.load(cfg.dataset).val
    largest = np.bincount(val.y).max() / len(val.y)
    none_model = _logged_model(cfg, ids["none"], tmp_path)
    clean = _accuracy(none_model, val.x, val.y)
    assert 0 <= measures.loc[ids["blank"], "affinity"] * clean <= largest + 1e-9
    assert measures.loc[ids["blank"], "affinity"] < 0.5
    # Exactly the none run's logged model's accuracy on the blanked validation images over its accuracy on the
    # clean ones, computed here on images made blank without the policy's code.
    blanked = _accuracy(none_model, np.zeros_like(val.x), val.y)
    assert measures.loc[ids["blank"], "affinity"] == pytest.approx(blanked / clean, rel=1e-9)
    # Likewise on mirrored images, on which the none model's answers vary (a constant answer would score any images
    # alike): the affinity is that model's accuracy on them, not another model's or on other images.
    mirrored = np.ascontiguousarray(val.x[:, :, ::-1])
    assert len(np.unique(none_model.predict(mirrored, verbose=0).argmax(-1))) > 2
    assert measures.loc[ids["mirror"], "affinity"] == pytest.approx(_accuracy(none_model, mirrored, val.y) / clean,
                                                                    rel=1e-9)
    assert measures.loc[ids["mirror"], "affinity"] < 1.0  # a mirrored digit is a harder one
    # A blank image can only be fitted as a constant: the training loss stays high.
    assert measures.loc[ids["blank"], "diversity"] > 1.0

    # Logged to their runs, and read back by a rebuilt report without loading a model.
    logged = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(ids["blank"]).data.metrics
    assert logged["affinity"] == pytest.approx(measures.loc[ids["blank"], "affinity"])
    assert logged["diversity"] == pytest.approx(measures.loc[ids["blank"], "diversity"])
    again = affinity.of_runs(cfg, report.runs_of(cfg)[0]).set_index("run_id")
    pd.testing.assert_frame_equal(measures.sort_index(), again.sort_index())

    off = make_cfg("experiment_name=affinity", "lenses.affinity=false", lean=False)
    table = pd.read_csv(report.build(off, out_root=tmp_path / "off") / "summary.csv")
    assert table["affinity"].isna().all()  # switched off: not read back either
    out = report.build(cfg, out_root=tmp_path / "reports")
    table = pd.read_csv(out / "summary.csv").set_index("augmentation")
    assert table.loc["identity", "affinity"] == 1.0 and table.loc["blank", "affinity"] < 0.5
    assert (out / "affinity.png").stat().st_size > 0
    assert "affinity.png" in (out / "report.html").read_text()


def _logged_model(cfg, run_id, folder):
    """The model.keras a run logged, fetched from MLflow by this test and loaded by plain Keras."""
    import keras

    path = MlflowClient(tracking_uri=cfg.tracking.uri).download_artifacts(run_id, "model.keras", str(folder))
    return keras.models.load_model(path, compile=False)


def _accuracy(model, images, labels) -> float:
    return float(np.mean(model.predict(images, verbose=0).argmax(-1) == labels))


def test_a_run_recorded_before_placement_gives_its_policy_back():
    """A config.yaml logged before augmentation.placement holds where and mode beside the policy: read back, the
    policy is the same as one logged after (the same fingerprint)."""
    from omegaconf import OmegaConf

    from ablation import augment
    from ablation.lenses.affinity import recorded_policy

    policy = {"name": "hflip", "transforms": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}],
              "strength": None, "copies": 4, "save_format": "png", "save_prefix": "aug"}
    old = OmegaConf.create({"augmentation": {**policy, "where": "host", "mode": "online"}})
    new = OmegaConf.create({"augmentation": {**policy, "placement": "host"}})
    assert augment.build(recorded_policy(old)).fingerprint == augment.build(recorded_policy(new)).fingerprint
